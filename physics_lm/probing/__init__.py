"""Probing frozen models (`mode=probe`).

capture.py (named hidden states of a frozen model) · heads.py (linear and multi-linear heads)
· train_probe.py (task-agnostic jitted probe steps; the model's params are a frozen input) ·
cfg_probe.py (CFG NT-ancestor / NT-boundary targets) · cfg_run.py (the CFG family's `mode=probe`
handler, registered in physics_lm/modes.py).
"""
