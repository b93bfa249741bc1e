"""Evaluation: KV-cached sampling (decode.py), the CFG family's eval and sample handlers
(cfg_eval.py, cfg_sample.py; registered in physics_lm/modes.py) and their plots (plots.py)."""
