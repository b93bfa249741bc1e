"""Launchers: local multi-process, TPU pod, xpk, Slurm; AOT fit check; sweep runner."""
