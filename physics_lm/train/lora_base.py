"""The frozen base of a LoRA run (`train.lora_rank`): found once, then pinned by a pointer.

A LoRA run's checkpoints hold only the adapters (its TrainState). On its first launch the base
run named by `train.init_from=WORKDIR[:STEP]` is resolved to a step and written to
`workdir/lora_base.json` (absolute workdir, step, parameter count and a fingerprint of the
values). Every later reader — a relaunch, the eval/probe modes — loads that exact checkpoint
again and refuses it if its fingerprint changed (e.g. the base workdir was retrained), so the
adapters are never applied to params they were not trained on. `merged(exp, adapters, base)` is
the model's params, `lora.merge` jitted into the model's shardings.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from physics_lm.config import ConfigError, parse_init_from
from physics_lm.models import lora
from physics_lm.train import init_from
from physics_lm.train.setup import Experiment

POINTER = "lora_base.json"


def fingerprint(params: Any) -> float:
    """Sum over tensors of mean |w|: cheap, and changes with any retraining of the base."""
    return float(sum(jnp.mean(jnp.abs(x)) for x in jax.tree.leaves(params)))


def load(exp: Experiment, workdir: Path, *, first_launch: bool) -> Any:
    """The base params (model shardings); writes the pointer on the first launch, else reads it."""
    path = workdir / POINTER
    if first_launch:
        base, step = init_from.load_params(exp, exp.cfg.train.init_from)
        source = parse_init_from(exp.cfg.train.init_from)[0].absolute()
        doc = {"workdir": str(source), "step": step, "fingerprint": fingerprint(base),
               "num_params": sum(math.prod(x.shape) for x in jax.tree.leaves(base))}
        if jax.process_index() == 0:
            path.write_text(json.dumps(doc, indent=1))
        return base
    if not path.exists():
        raise ConfigError(f"train.lora_rank={exp.cfg.train.lora_rank}: {path} is missing: this "
                          "workdir has adapters but no pointer to their base run")
    doc = json.loads(path.read_text())
    base, _ = init_from.load_params(exp, f"{doc['workdir']}:{doc['step']}")
    now = fingerprint(base)
    if not np.isclose(now, doc["fingerprint"], rtol=1e-5, atol=0.0):
        raise ConfigError(f"{path}: the base checkpoint {doc['workdir']}:{doc['step']} changed "
                          f"since the adapters were trained (fingerprint {doc['fingerprint']} -> "
                          f"{now})")
    return base


def merged(exp: Experiment, adapters: Any, base: Any) -> Any:
    """W + A·B on every adapted matrix, in the model's param shardings (eval, analysis)."""
    return jax.jit(lora.merge, out_shardings=exp.param_shardings)(base, adapters)
