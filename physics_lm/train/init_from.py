"""`train.init_from=WORKDIR[:STEP]`: a new run that starts from another run's params or state.

Fine-tuning (Part 2.2: continued pretraining on retry data, LoRA) starts from a pretrained run.
The new run has its own workdir, config and schedule, and a fresh optimizer state; only the
params come from the source checkpoint (the latest, or STEP). The architectures must match: every
param path and shape of the new model must be in the source checkpoint with the same shape, and
nothing else; otherwise one line names the differences. A relaunch of the new run resumes from its
own checkpoints and never reads the source again.

`train.init_from_state=True` extends a run instead: the new run takes the source's whole train
state (params, optimizer moments, step counter), so it continues the source's step count and
therefore its data (a function of seed and step), under its own schedule. With
`optim.schedule=wsd` and a source checkpoint from before the source's decay, the new run's steps
are the source's own until then (tested bit for bit), and it decays at its own, later end.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jax
import orbax.checkpoint as ocp
from absl import logging

from physics_lm.config import ConfigError, OptimConfig, TrainConfig, build_section, parse_init_from
from physics_lm.train.optim import lr_schedule
from physics_lm.train.setup import Experiment
from physics_lm.train.steps import TrainState


def _shapes(tree: Any) -> dict[str, tuple[int, ...]]:
    """Leaf shapes by a path that reads the same for a live tree (an optax state's named tuples)
    and its checkpoint metadata (lists and dicts): "blocks_0/attn/qkv_kernel", "1/0/mu/wte"."""
    def part(entry: Any) -> str:
        return str(next((getattr(entry, a) for a in ("key", "idx", "name") if hasattr(entry, a)),
                        entry))

    leaves = jax.tree_util.tree_leaves_with_path(tree)
    return {"/".join(part(e) for e in k): tuple(v.shape) for k, v in leaves}


def start_from(exp: Experiment, state: TrainState, spec: str) -> TrainState:
    """`state` (freshly initialised) with its params replaced by the source run's, or, with
    `train.init_from_state`, the source's whole state."""
    if exp.cfg.train.init_from_state:
        return load_state(exp, spec)
    params, _ = load_params(exp, spec)
    # The fresh state's optimizer moments are zeros whatever the params: keep them.
    return dataclasses.replace(state, params=params)


@contextlib.contextmanager
def _source(spec: str, handler: ocp.CheckpointHandler
            ) -> Iterator[tuple[ocp.CheckpointManager, int, str]]:
    """(a manager of the source's checkpoints, the step to read, "train.init_from='…'")."""
    workdir, step = parse_init_from(spec)
    where = f"train.init_from={spec!r}"
    directory = workdir.absolute() / "checkpoints"
    if not directory.is_dir():
        raise ConfigError(f"{where}: no checkpoints in {directory}")
    mgr = ocp.CheckpointManager(directory, item_handlers=handler)
    try:
        step = mgr.latest_step() if step is None else step
        if step is None or step not in mgr.all_steps():
            raise ConfigError(f"{where}: no checkpoint of step {step} in {directory} "
                              f"(have {sorted(mgr.all_steps())})")
        yield mgr, step, where
    finally:
        mgr.close()


def _check_params(where: str, saved: dict, want: dict) -> None:
    missing = sorted(set(want) - set(saved))
    extra = sorted(set(saved) - set(want))
    shape = sorted(k for k in set(want) & set(saved) if want[k] != saved[k])
    if missing or extra or shape:
        raise ConfigError(
            f"{where}: the architectures differ: missing {missing[:3]}, unexpected "
            f"{extra[:3]}, shapes {[(k, saved[k], want[k]) for k in shape[:3]]} "
            f"(source -> this run)")


def load_params(exp: Experiment, spec: str) -> tuple[Any, int]:
    """(the source run's params in this run's model shardings, its step); arch checked."""
    with _source(spec, ocp.PyTreeCheckpointHandler()) as (mgr, step, where):
        want = _shapes(exp.abstract_params)
        _check_params(where, _shapes(mgr.item_metadata(step)["params"]), want)
        item = {"params": exp.abstract_params}  # restored straight into our shardings
        restored = mgr.restore(step, args=ocp.args.PyTreeRestore(
            item=item, restore_args=ocp.checkpoint_utils.construct_restore_args(item),
            partial_restore=True))
    logging.info("%s: reusing all %s params (%d tensors) of step %d",
                 where, f"{sum(math.prod(s) for s in want.values()):,}", len(want), step)
    return restored["params"], step


def load_state(exp: Experiment, spec: str) -> TrainState:
    """The source run's whole train state at its step, in this run's shardings.

    The params are checked as in `load_params`; the optimizer state must hold the same tensors
    (an optimizer chain that differs, e.g. `optim.grad_clip` on in one run and off in the other,
    is refused naming tensors that differ). Logs the learning rate the source's own schedule had
    at that step beside this run's, so a jump is visible.
    """
    num_steps = exp.cfg.train.num_steps
    with _source(spec, ocp.StandardCheckpointHandler()) as (mgr, step, where):
        if step >= num_steps:
            raise ConfigError(f"{where}, train.init_from_state=True: the source is at step {step}"
                              f", not before this run's train.num_steps={num_steps}")
        meta = mgr.item_metadata(step)
        _check_params(where, _shapes(meta["params"]), _shapes(exp.abstract_params))
        saved, want = _shapes(meta["opt_state"]), _shapes(exp.abstract_state.opt_state)
        if saved != want:
            odd = sorted(set(saved.items()) ^ set(want.items()))
            raise ConfigError(
                f"{where}, train.init_from_state=True: the optimizer states differ (source "
                f"{len(saved)} tensors, this run {len(want)}; e.g. {odd[:2]}): the optimizer "
                "chain must be the same (optim.grad_clip on or off in both)")
        state = mgr.restore(step, args=ocp.args.StandardRestore(exp.abstract_state))
    source_lr = _source_lr(parse_init_from(spec)[0], step)
    logging.info("%s: continuing the source's train state at step %d; learning rate there: "
                 "%s (source schedule) -> %.3g (this run)", where, step,
                 "unknown" if source_lr is None else f"{source_lr:.3g}",
                 float(lr_schedule(exp.cfg.optim, num_steps)(step)))
    return state


def _source_lr(workdir: Path, step: int) -> float | None:
    """The learning rate of the source run's own schedule at `step` (None: no readable config)."""
    try:
        raw = json.loads((workdir / "config.json").read_text())
        optim = build_section("optim", OptimConfig, raw["optim"])
        train = build_section("train", TrainConfig, raw["train"])
    except (OSError, ValueError, KeyError, ConfigError):
        return None
    return float(lr_schedule(optim, train.num_steps)(step))
