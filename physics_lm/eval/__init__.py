"""Evaluation: KV-cached sampling (decode.py), Part 1 CFG metrics (cfg_eval.py), the eval and
sample modes (run.py) and their plots (plots.py)."""
