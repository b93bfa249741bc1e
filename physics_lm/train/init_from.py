"""`train.init_from=WORKDIR[:STEP]`: a new run that starts from another run's params.

Fine-tuning (Part 2.2: continued pretraining on retry data, LoRA) starts from a pretrained run.
The new run has its own workdir, config and schedule, and a fresh optimizer state; only the
params come from the source checkpoint (the latest, or STEP). The architectures must match: every
param path and shape of the new model must be in the source checkpoint with the same shape, and
nothing else; otherwise one line names the differences. A relaunch of the new run resumes from its
own checkpoints and never reads the source again.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import orbax.checkpoint as ocp
from absl import logging

from physics_lm.config import ConfigError, parse_init_from
from physics_lm.train.setup import Experiment
from physics_lm.train.steps import TrainState


def _shapes(tree: Any) -> dict[str, tuple[int, ...]]:
    leaves = jax.tree_util.tree_leaves_with_path(tree)
    return {jax.tree_util.keystr(k): tuple(v.shape) for k, v in leaves}


def start_from(exp: Experiment, state: TrainState, spec: str) -> TrainState:
    """`state` (freshly initialised) with its params replaced by the source run's."""
    params, _ = load_params(exp, spec)
    # The fresh state's optimizer moments are zeros whatever the params: keep them.
    return dataclasses.replace(state, params=params)


def load_params(exp: Experiment, spec: str) -> tuple[Any, int]:
    """(the source run's params in this run's model shardings, its step); arch checked."""
    workdir, step = parse_init_from(spec)
    where = f"train.init_from={spec!r}"
    directory = workdir.absolute() / "checkpoints"
    if not directory.is_dir():
        raise ConfigError(f"{where}: no checkpoints in {directory}")
    mgr = ocp.CheckpointManager(directory, item_handlers=ocp.PyTreeCheckpointHandler())
    try:
        step = mgr.latest_step() if step is None else step
        if step is None or step not in mgr.all_steps():
            raise ConfigError(f"{where}: no checkpoint of step {step} in {directory} "
                              f"(have {sorted(mgr.all_steps())})")
        saved = _shapes(mgr.item_metadata(step)["params"])
        want = _shapes(exp.abstract_params)
        missing = sorted(set(want) - set(saved))
        extra = sorted(set(saved) - set(want))
        shape = sorted(k for k in set(want) & set(saved) if want[k] != saved[k])
        if missing or extra or shape:
            raise ConfigError(
                f"{where}: the architectures differ: missing {missing[:3]}, unexpected "
                f"{extra[:3]}, shapes {[(k, saved[k], want[k]) for k in shape[:3]]} "
                f"(source -> this run)")
        item = {"params": exp.abstract_params}  # restored straight into our shardings
        restored = mgr.restore(step, args=ocp.args.PyTreeRestore(
            item=item, restore_args=ocp.checkpoint_utils.construct_restore_args(item),
            partial_restore=True))
    finally:
        mgr.close()
    logging.info("%s: reusing all %s params (%d tensors) of step %d",
                 where, f"{sum(math.prod(s) for s in want.values()):,}", len(want), step)
    return restored["params"], step
