"""`train_and_evaluate(cfg, workdir)`: the training loop. The workdir *is* the run.

Relaunching the same command resumes from the latest checkpoint and, because every batch is a
function of (seed, step), replays exactly the data the uninterrupted run would have seen. The
host never blocks on the step it just dispatched: it reads step n-1's metrics while step n runs.
"""

from __future__ import annotations

import dataclasses
import math
import signal
import time
from pathlib import Path
from typing import Any

import flax.linen as nn
import jax
import numpy as np
from absl import logging

from physics_lm.config import ConfigError, ExperimentConfig
from physics_lm.train import distributed, init_from, lora_base, memory, sharding
from physics_lm.train import metrics as metrics_lib
from physics_lm.train.checkpoint import Checkpointer
from physics_lm.train.setup import Experiment, build_experiment, restore_or_init
from physics_lm.train.steps import make_eval_step, make_train_step
from physics_lm.train.workdir import check_workdir_config, mark_finished

__all__ = ["NonFiniteLossError", "check_workdir_config", "jit_steps", "load_trained",
           "train_and_evaluate"]


class NonFiniteLossError(RuntimeError):
    pass


def load_trained(cfg: ExperimentConfig, workdir: str | Path, step: int | None = None):
    """(experiment, params, step) of a trained run; for eval/probe/sample modes.

    The config must describe the run in `workdir` (its mode and analysis sections may differ).
    A LoRA run's params are the merged ones (base + adapters), so analysis needs no LoRA code.
    """
    workdir = Path(workdir)
    check_workdir_config(cfg, workdir, write=False, ignore=("mode",))
    exp = build_experiment(cfg)
    ckpt = Checkpointer(workdir, every=cfg.train.checkpoint_every, keep=cfg.train.keep_checkpoints)
    try:
        if step is None:
            step, state = ckpt.restore_latest(exp.abstract_state)
            if step is None:
                raise ConfigError(f"no checkpoint in {workdir / 'checkpoints'}: train first")
        else:
            state = ckpt.restore(step, exp.abstract_state)
    finally:
        ckpt.close()
    if cfg.train.lora_ranks:
        base = lora_base.load(exp, workdir, first_launch=False)
        return exp, lora_base.merged(exp, state.params, base), step
    return exp, state.params, step


class _Preemption:
    """SIGTERM -> save and exit cleanly at the next step boundary.

    Multi-process: no Python handler. `jax.distributed.initialize` installed JAX's preemption
    notifier on SIGTERM; it tells every process, and `Checkpointer.reached_preemption` turns
    true on all of them at the same step. A flag seen by one process alone would leave the
    others waiting in the next step's collectives.
    """

    def __init__(self) -> None:
        self.requested = False
        self._old = None
        if jax.process_count() > 1:
            return
        try:
            self._old = signal.signal(signal.SIGTERM, self._handle)
        except ValueError:  # not the main thread (e.g. some test runners)
            logging.warning("SIGTERM handler not installed (not in the main thread)")

    def _handle(self, signum, frame) -> None:
        logging.warning("SIGTERM: saving a checkpoint and exiting at the next step boundary")
        self.requested = True

    def restore(self) -> None:
        if self._old is not None:
            signal.signal(signal.SIGTERM, self._old)


def jit_steps(exp: Experiment):
    """The jitted (train_step, eval_step) with explicit shardings; train donates its state.

    train_step(state, *frozen): frozen is (base params,) for LoRA (never donated), else ().
    eval_step(params, i) takes the model's params (LoRA: merged).
    """
    cfg = exp.cfg
    rules = sharding.activation_rules(exp.mesh)
    train_step = make_train_step(
        exp.model, exp.task, exp.tx, seed=cfg.seed, batch_size=cfg.train.batch_size,
        grad_accum=cfg.optim.grad_accum, dropout=cfg.model.dropout > 0,
        batch_constraint=exp.constrain_batch)
    # eval_loss is measured on the task's held-out variant (iGSM: the test template bins).
    eval_step = make_eval_step(exp.model, exp.task.heldout(), seed=cfg.seed,
                               batch_size=cfg.train.batch_size // cfg.optim.grad_accum,
                               batch_constraint=exp.constrain_batch)

    def with_rules(fn):
        def wrapped(*args):
            with nn.logical_axis_rules(rules):
                return fn(*args)
        return wrapped

    replicated = exp.state_shardings.step
    frozen_sh = (exp.param_shardings,) if exp.frozen_abstract else ()
    jit_train = jax.jit(with_rules(train_step), in_shardings=(exp.state_shardings, *frozen_sh),
                        out_shardings=(exp.state_shardings, replicated), donate_argnums=(0,))
    jit_eval = jax.jit(with_rules(eval_step), in_shardings=(exp.param_shardings, None),
                       out_shardings=(replicated, replicated))
    return jit_train, jit_eval


def check_step_memory(exp: Experiment, compiled) -> memory.StepMemory | None:
    """Stops (`memory.DoesNotFitError`, one line) if the compiled train step cannot fit."""
    cfg = exp.cfg

    def compile_at(grad_accum: int) -> memory.StepMemory | None:
        optim = dataclasses.replace(cfg.optim, grad_accum=grad_accum)
        other = dataclasses.replace(exp, cfg=dataclasses.replace(cfg, optim=optim))
        return memory.step_memory(jit_steps(other)[0].lower(
            exp.abstract_state, *exp.frozen_abstract).compile())

    return memory.check_fits(
        compiled, devices=exp.mesh.local_devices, override=cfg.train.device_memory_bytes,
        grad_accum=cfg.optim.grad_accum, batch_size=cfg.train.batch_size,
        dp=sharding.data_parallel_size(exp.mesh), compile_at=compile_at)


def periodic_analysis(exp: Experiment, workdir: Path, params, step: int) -> dict[str, float]:
    """The family's eval handler on the current params (no control, no files): its scalars as
    `eval/<path>`, for learning curves without one process per point."""
    import dataclasses as dc

    from physics_lm import modes
    from physics_lm.analysis import LoadedRun, flatten

    handler = modes.family_handler("eval", exp.cfg.task.name)
    if handler is None:
        raise ConfigError(f"train.analysis_every={exp.cfg.train.analysis_every}: task.name="
                          f"{exp.cfg.task.name!r} has no eval mode")
    settings = exp.cfg.eval
    if "control" in {f.name for f in dc.fields(settings)}:
        settings = dc.replace(settings, control=False)
    doc = handler.run(LoadedRun(exp.cfg, workdir, exp, params, step), settings)
    doc.pop("records", None)
    scalars = flatten({k: v for k, v in doc.items() if k not in ("eval_config", "settings")})
    logging.info("step %d analysis: %s", step, ", ".join(
        f"{k}={v:.4g}" for k, v in list(scalars.items())[:4]))
    return {f"eval/{k}": v for k, v in scalars.items()}


def evaluate(exp: Experiment, jit_eval, params) -> dict[str, float]:
    """Held-out loss on fresh samples from the eval key stream (never used for training)."""
    total, count = 0.0, 0.0
    for i in range(exp.cfg.train.eval_batches):
        s, n = jit_eval(params, i)
        total, count = total + float(s), count + float(n)
    return {"eval_loss": total / max(count, 1.0)}


def train_and_evaluate(cfg: ExperimentConfig, workdir: str | Path, *,
                       stop_at_step: int | None = None) -> dict[str, float]:
    """Trains (or resumes) the run in `workdir`; returns the last logged metrics.

    `stop_at_step` ends this launch early with a checkpoint (time-sliced jobs, resume tests);
    the run's schedule still targets `train.num_steps`.
    """
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    exp = build_experiment(cfg)
    check_workdir_config(cfg, workdir)
    ckpt = Checkpointer(workdir, every=cfg.train.checkpoint_every,
                        keep=cfg.train.keep_checkpoints)
    state = restore_or_init(exp, ckpt)  # outside the mesh context: init needs no constraints
    first_launch = ckpt.latest_step() is None
    frozen: tuple[Any, ...] = ()
    if cfg.train.lora_ranks:  # state.params are the adapters; the base is read on every launch
        frozen = (lora_base.load(exp, workdir, first_launch=first_launch),)
    elif cfg.train.init_from and first_launch:  # a relaunch resumes its own ckpt
        state = init_from.start_from(exp, state, cfg.train.init_from)
    with jax.set_mesh(exp.mesh):
        return _loop(exp, workdir, ckpt, state, stop_at_step or cfg.train.num_steps, frozen)


def _loop(exp: Experiment, workdir: Path, ckpt: Checkpointer, state, stop_at: int,
          frozen: tuple[Any, ...] = ()) -> dict[str, float]:
    cfg = exp.cfg
    step = int(state.step)
    if step:
        logging.info("resumed from step %d", step)
    jit_train, jit_eval = jit_steps(exp)
    t = time.perf_counter()
    jit_train = jit_train.lower(state, *frozen).compile()  # compile once, outside the timed loop
    logging.info("train step compiled in %.1fs", time.perf_counter() - t)
    # Hosts finish compiling at different times; the first step's collectives must not wait.
    distributed.barrier("train step compiled")
    check_step_memory(exp, jit_train)
    n_params = metrics_lib.count_params(state.params)  # LoRA: the trained adapters
    seq_len = exp.task.seq_len
    tokens_per_step = cfg.train.batch_size * seq_len
    flops = metrics_lib.train_flops_per_token(exp.model.cfg, seq_len) * tokens_per_step
    peak = metrics_lib.peak_flops_per_device(cfg.train.peak_flops_per_device)
    speed = metrics_lib.Throughput(cfg.train.batch_size * seq_len, flops,
                                   peak * exp.mesh.size if peak else None, cfg.train.num_steps)
    logging.info("model: %s trained params, task %s, mesh %s", f"{n_params:,}", exp.task.name,
                 dict(exp.mesh.shape))
    writer = metrics_lib.MetricsWriter(workdir, start_step=step)
    preempt = _Preemption()
    window: list[float] = []
    last: dict[str, float] = {}
    pending: tuple[int, Any] | None = None
    phase = {"eval_s": 0.0, "checkpoint_s": 0.0}

    def flush() -> None:
        """Reads the pending step's metrics (blocking only on that step), checks, logs."""
        nonlocal pending, last
        if pending is None:
            return
        done_step, m = pending
        pending = None
        m = {k: float(v) for k, v in jax.device_get(m).items()}
        if not math.isfinite(m["loss"]):
            raise NonFiniteLossError(
                f"non-finite loss {m['loss']} at step {done_step} (the update from step "
                f"{done_step - 1} to {done_step}); last finite checkpoint: {ckpt.latest_step()}")
        window.append(m["loss"])
        if done_step % cfg.train.log_every == 0 or done_step == cfg.train.num_steps:
            last = {**m, "loss": m["loss"], "loss_window_mean": float(np.mean(window)),
                    **speed.report(done_step), **phase}
            window.clear()
            writer.write(done_step, last)
            logging.info(metrics_lib.progress_line(done_step, cfg.train.num_steps, last))

    def model_params():
        return lora_base.merged(exp, state.params, frozen[0]) if frozen else state.params

    speed.reset(step)
    try:
        while step < cfg.train.num_steps:
            if preempt.requested or ckpt.reached_preemption(step) or step >= stop_at:
                flush()
                ckpt.wait()
                if ckpt.latest_step() != step:
                    ckpt.save(step, state)
                    ckpt.wait()
                logging.warning("stopping: saved step %d (relaunch to resume)", step)
                break
            state, m = jit_train(state, *frozen)
            step += 1
            flush()  # step-1's metrics, while `step` runs
            pending = (step, m)
            if step % cfg.train.eval_every == 0 or step == cfg.train.num_steps:
                flush()
                t = time.perf_counter()
                if cfg.train.eval_batches:
                    ev = evaluate(exp, jit_eval, model_params())
                    writer.write(step, ev)
                    last.update(ev)
                    logging.info("step %d eval_loss %.4f", step, ev["eval_loss"])
                phase["eval_s"] += time.perf_counter() - t
                speed.reset(step)
            if cfg.train.analysis_every and (step % cfg.train.analysis_every == 0
                                             or step == cfg.train.num_steps):
                flush()
                t = time.perf_counter()
                scalars = periodic_analysis(exp, workdir, model_params(), step)
                writer.write(step, scalars)
                phase["eval_s"] += time.perf_counter() - t
                speed.reset(step)
            if ckpt.should_save(step) or step == cfg.train.num_steps:
                flush()  # never checkpoint a state whose loss was not checked
                t = time.perf_counter()
                ckpt.save(step, state)
                phase["checkpoint_s"] += time.perf_counter() - t
                speed.reset(step)
        flush()
    finally:
        ckpt.close()
        writer.close()
        preempt.restore()
    if step >= cfg.train.num_steps:  # its checkpoint is committed (close waited for it)
        mark_finished(workdir, step)
    last["step"] = step
    return last
