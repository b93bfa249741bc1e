"""Training: the loop (trainer.py), pure steps (steps.py), sharding, optimizer, checkpoints and
metrics. A package like every other folder of physics_lm, so that wheels ship it."""
