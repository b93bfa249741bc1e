"""Small builders shared by several test modules (importable: pytest puts tests/ on sys.path)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jax
import numpy as np

from physics_lm.config import from_config_dict

# XLA's backend optimisation off: the sampler's compile dominates, its run time does not.
FAST = {"xla_backend_optimization_level": 0}


def sample_igsm(task: Any, n: int, seed: int = 0):
    """`n` rows of an IGSMTask as numpy, compiled once with `FAST`."""
    key = jax.random.PRNGKey(seed)
    f = jax.jit(lambda k: task.sample(k, n)).lower(key).compile(FAST)
    return jax.tree.map(np.asarray, f(key))


def tiny_cfg_run(**extra):
    """A 2-step, 2-layer width-32 rotary cfg3b run config (sections in `extra` replace)."""
    c = {"seed": 1,
         "task": {"name": "cfg", "grammar": "cfg3b", "seq_len": 64},
         "model": {"num_layers": 2, "num_heads": 2, "d_model": 32, "max_len": 64,
                   "pos": "rotary"},
         "optim": {"warmup_steps": 1, "lr": 3e-3},
         "train": {"batch_size": 8, "num_steps": 2, "log_every": 1, "eval_every": 100,
                   "eval_batches": 0, "checkpoint_every": 2},
         **extra}
    return from_config_dict(c)


def truncate_checkpoint(step_dir: Path) -> None:
    """Cuts every data file of an orbax checkpoint (`checkpoints/<step>`) to half its size."""
    files = [p for p in (step_dir / "default").rglob("*") if p.is_file() and "/d/" in str(p)]
    assert files, "no data files found: orbax's layout changed"
    for p in files:
        p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])
