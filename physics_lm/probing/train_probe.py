"""Fitting probes on a frozen model: a separate jitted step whose only state is the probe's.

Task-agnostic: a `ProbeProblem` says how to draw a batch on device (`sample_fn`), how to turn it
into stacked features (`features_fn`, which runs the frozen model) and how many classes each
target group has. Every step samples a fresh batch *inside* the jit from fold_in(key, step),
runs the frozen model once, and updates every probe (all layers × groups × head kinds) at once.
The model's parameters enter each step as an argument under `stop_gradient` and are never
returned, so probe training cannot change them.

Features are standardised per (layer, dimension) with a mean/std measured on the first training
batch and then frozen (an affine map, so the probes stay linear in the hidden states): residual
streams grow by orders of magnitude from the embedding to the last block, and one learning rate
then suits every layer, the trained model and the random-init control alike.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import logging

from physics_lm.probing import heads as heads_lib

# Key streams of probing, beside the trainer's 0-3 (train/steps.py); never change their meaning.
STREAM_PROBE_DATA, STREAM_PROBE_EVAL, STREAM_PROBE_INIT = 10, 11, 12


class ProbeBatch(NamedTuple):
    """One probing batch (leading dim B on every leaf).

    Attributes:
      inputs: what `features_fn` reads (tokens int32[B, T] for language-model probes).
      labels: int32[B, T, G] class per position and target group; -1 = not scored.
      focus: bool[B, T, G], the subset also reported on its own (e.g. NT-end positions).
    """

    inputs: Any
    labels: jax.Array
    focus: jax.Array


@dataclasses.dataclass(frozen=True)
class ProbeProblem:
    """What a data family supplies to probe a model.

    Attributes:
      sample_fn: pure, jittable `(key, batch_size) -> ProbeBatch`.
      features_fn: pure `(feature_params, frozen, inputs) -> float32[N, B, T, D]`. `frozen` is
        the model's params (already stop-gradient); `feature_params` are trainable params of the
        feature extractor itself (empty for plain probes; the V-probe's rank-r embedding delta).
      num_classes: classes per target group (length G).
      init_feature_params: `key -> feature_params` (default: none).
    """

    sample_fn: Callable[[jax.Array, int], ProbeBatch]
    features_fn: Callable[[Any, Any, Any], jax.Array]
    num_classes: tuple[int, ...]
    init_feature_params: Callable[[jax.Array], Any] = lambda key: {}


@dataclasses.dataclass(frozen=True)
class FitSettings:
    """Sizes of one probe fit (run.py documents the config keys that set them)."""

    steps: int = 2000
    batch_size: int = 32
    lr: float = 1e-3
    warmup_steps: int = 100
    eval_batches: int = 8
    kinds: tuple[str, ...] = heads_lib.KINDS
    schedule: str = "cosine"  # or "linear": from lr to 0, no warmup (Part 2.1's V-probe)
    weight_decay: float = 0.0
    num_heads: int = 16
    rank: int = 32
    max_offset: int = 128
    remat: bool = True
    log_every: int = 200
    seed: int = 0


@flax.struct.dataclass
class ProbeState:
    step: jax.Array  # int32 scalar: updates applied
    params: Any  # {"heads": {kind: ...}, "features": ...}
    opt_state: Any
    norm: Any  # {"mean_NxD", "std_NxD"}: feature standardisation, measured at step 0


SCHEDULES = ("cosine", "linear")


def make_optimizer(s: FitSettings) -> optax.GradientTransformation:
    """Adam(W). "cosine": warmup then cosine decay to lr/10 (fresh data each step, so weight
    decay is optional); "linear": lr decayed linearly to 0 over `steps`, no warmup (the paper's
    V-probe recipe, with weight decay 0.01)."""
    if s.schedule == "linear":
        sched = optax.linear_schedule(s.lr, 0.0, max(s.steps, 1))
    elif s.schedule == "cosine":
        warmup = min(s.warmup_steps, s.steps)
        sched = optax.warmup_cosine_decay_schedule(0.0, s.lr, warmup, max(s.steps, warmup + 1),
                                                   s.lr * 0.1)
    else:
        raise ValueError(f"schedule={s.schedule!r}: one of {SCHEDULES}")
    if s.weight_decay:
        return optax.adamw(sched, weight_decay=s.weight_decay)
    return optax.adam(sched)


def init_probe_state(problem: ProbeProblem, tx: optax.GradientTransformation, s: FitSettings,
                     N: int, D: int) -> ProbeState:
    """Fresh probe state for N layers of width D (one jitted call: eager RNG ops compile one
    by one, which costs seconds each on a loaded host)."""

    def init() -> ProbeState:
        key = jax.random.fold_in(jax.random.key(s.seed), STREAM_PROBE_INIT)
        k_heads, k_feat = jax.random.split(key)
        params = {"heads": heads_lib.init_heads(k_heads, s.kinds, N, D, problem.num_classes,
                                                num_heads=s.num_heads, rank=s.rank,
                                                max_offset=s.max_offset),
                  "features": problem.init_feature_params(k_feat)}
        norm = {"mean_NxD": jnp.zeros((N, D), jnp.float32),
                "std_NxD": jnp.ones((N, D), jnp.float32)}
        return ProbeState(jnp.zeros((), jnp.int32), params, tx.init(params), norm)

    return jax.jit(init)()


def per_probe_loss(logits_NxBxTxGxC: jax.Array, labels_BxTxG: jax.Array) -> jax.Array:
    """float32[N, G]: mean cross-entropy of each probe over its scored positions."""
    valid_BxTxG = labels_BxTxG >= 0
    ce_NxBxTxG = optax.softmax_cross_entropy_with_integer_labels(
        logits_NxBxTxGxC, jnp.maximum(labels_BxTxG, 0)[None])
    total_NxG = jnp.sum(jnp.where(valid_BxTxG[None], ce_NxBxTxG, 0.0), axis=(1, 2))
    return total_NxG / jnp.maximum(jnp.sum(valid_BxTxG, axis=(0, 1)), 1)


def normalise(feats_NxBxTxD: jax.Array, norm: dict[str, jax.Array]) -> jax.Array:
    return (feats_NxBxTxD - norm["mean_NxD"][:, None, None]) / norm["std_NxD"][:, None, None]


def feature_stats(feats_NxBxTxD: jax.Array, labels_BxTxG: jax.Array) -> dict[str, jax.Array]:
    """Per-(layer, dim) mean and std over the positions that carry any label."""
    w_BxT = jnp.any(labels_BxTxG >= 0, axis=-1).astype(jnp.float32)
    n = jnp.maximum(jnp.sum(w_BxT), 1.0)
    mean_NxD = jnp.einsum("nbtd,bt->nd", feats_NxBxTxD, w_BxT) / n
    var_NxD = jnp.einsum("nbtd,bt->nd", (feats_NxBxTxD - mean_NxD[:, None, None]) ** 2,
                         w_BxT) / n
    # A floor relative to the layer's typical scale (its RMS): a (nearly) constant dimension
    # stays ~0 instead of turning float noise into a huge feature -- also when the whole layer
    # is constant on the labelled positions (the V-probe's <end> token at the embedding).
    rms_Nx1 = jnp.sqrt(jnp.mean(var_NxD + mean_NxD**2, axis=-1, keepdims=True))
    floor_Nx1 = 1e-3 * rms_Nx1 + 1e-12
    return jax.lax.stop_gradient({"mean_NxD": mean_NxD, "std_NxD": jnp.sqrt(var_NxD) + floor_Nx1})


def make_train_step(problem: ProbeProblem, tx: optax.GradientTransformation, s: FitSettings,
                    batch_constraint: Callable[[Any], Any] = lambda b: b):
    """`(state, frozen) -> (state, metrics)`: one update of every probe on a fresh batch.

    The first step also measures the feature statistics (`state.norm`) on its own batch and
    keeps them from then on; doing it here, not in a separate jit, saves a compile of the
    model and sampler per probed model.
    """
    data_key = jax.random.fold_in(jax.random.key(s.seed), STREAM_PROBE_DATA)
    cmask_GxC = heads_lib.class_mask(problem.num_classes)

    def train_step(state: ProbeState, frozen: Any):
        batch = batch_constraint(problem.sample_fn(jax.random.fold_in(data_key, state.step),
                                                   s.batch_size))
        frozen = jax.lax.stop_gradient(frozen)

        def loss_fn(params):
            feats = problem.features_fn(params["features"], frozen, batch.inputs)
            norm = jax.tree.map(lambda new, old: jnp.where(state.step == 0, new, old),
                                feature_stats(feats, batch.labels), state.norm)
            logits = heads_lib.apply_heads(params["heads"], normalise(feats, norm), cmask_GxC,
                                           remat=s.remat)
            losses = {k: per_probe_loss(v, batch.labels) for k, v in logits.items()}
            return sum(jnp.sum(v) for v in losses.values()), (losses, norm)

        (loss, (losses, norm)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        metrics = {"loss": loss, **{f"loss_{k}": jnp.mean(v) for k, v in losses.items()}}
        return ProbeState(state.step + 1, params, opt_state, norm), metrics

    return train_step


def make_eval_step(problem: ProbeProblem, s: FitSettings, batch_size: int,
                   batch_constraint: Callable[[Any], Any] = lambda b: b):
    """`(state, frozen, i) -> counts` on held-out batch i (a stream training never uses).

    Counts (summed over batches by `evaluate`): per kind `correct[N, G]` and `correct_focus`;
    shared `n[G]`, `n_focus[G]` and label histograms `hist[G, C]`, `hist_focus` (baselines).
    """
    eval_key = jax.random.fold_in(jax.random.key(s.seed), STREAM_PROBE_EVAL)
    num_classes = problem.num_classes
    cmask_GxC = heads_lib.class_mask(num_classes)

    def eval_step(state: ProbeState, frozen: Any, i: jax.Array):
        batch = batch_constraint(problem.sample_fn(jax.random.fold_in(eval_key, i), batch_size))
        feats = problem.features_fn(state.params["features"], frozen, batch.inputs)
        logits = heads_lib.apply_heads(state.params["heads"], normalise(feats, state.norm),
                                       cmask_GxC, remat=s.remat)  # remat = sequential here
        valid_BxTxG = batch.labels >= 0
        focus_BxTxG = batch.focus & valid_BxTxG
        onehot_BxTxGxC = jax.nn.one_hot(batch.labels, max(num_classes), dtype=jnp.int32)
        out = {"n": jnp.sum(valid_BxTxG, axis=(0, 1)),
               "n_focus": jnp.sum(focus_BxTxG, axis=(0, 1)),
               "hist": jnp.sum(onehot_BxTxGxC, axis=(0, 1)),
               "hist_focus": jnp.sum(onehot_BxTxGxC * focus_BxTxG[..., None], axis=(0, 1))}
        for kind, lg in logits.items():
            hit_NxBxTxG = jnp.argmax(lg, axis=-1) == batch.labels[None]
            out[f"{kind}/correct"] = jnp.sum(hit_NxBxTxG & valid_BxTxG[None], axis=(1, 2))
            out[f"{kind}/correct_focus"] = jnp.sum(hit_NxBxTxG & focus_BxTxG[None], axis=(1, 2))
        return out

    return eval_step


def jit_steps(problem: ProbeProblem, s: FitSettings, *, eval_batch_size: int | None = None,
              batch_constraint: Callable[[Any], Any] = lambda b: b, replicated: Any = None):
    """(tx, jitted train step donating its state, jitted eval step).

    `replicated` (a NamedSharding on the run's mesh) pins the probe state and metrics to
    every device; the frozen params keep whatever sharding they were restored with.
    """
    tx = make_optimizer(s)
    train = make_train_step(problem, tx, s, batch_constraint)
    ev = make_eval_step(problem, s, eval_batch_size or s.batch_size, batch_constraint)
    out_sh = {} if replicated is None else {"out_shardings": (replicated, replicated)}
    return tx, jax.jit(train, donate_argnums=(0,), **out_sh), jax.jit(ev)


def evaluate(jit_eval, state: ProbeState, frozen: Any, num_batches: int
             ) -> dict[str, dict[str, np.ndarray]]:
    """Accuracies on `num_batches` held-out batches.

    Returns {kind: {"acc": [N, G], "acc_focus": [N, G]}} plus "baseline": {"majority": [G],
    "majority_focus": [G], "n": [G], "n_focus": [G]} (majority = the best constant guess on
    the same positions; NaN where a subset is empty).
    """
    tot: dict[str, np.ndarray] = {}
    for i in range(num_batches):
        for k, v in jax.device_get(jit_eval(state, frozen, i)).items():
            tot[k] = tot.get(k, 0) + np.asarray(v, np.int64)
    with np.errstate(invalid="ignore", divide="ignore"):
        n, nf = tot["n"].astype(float), tot["n_focus"].astype(float)
        out: dict[str, dict[str, np.ndarray]] = {"baseline": {
            "majority": tot["hist"].max(-1) / n, "majority_focus": tot["hist_focus"].max(-1) / nf,
            "n": tot["n"], "n_focus": tot["n_focus"]}}
        for key in tot:
            if key.endswith("/correct"):
                kind = key.split("/")[0]
                out[kind] = {"acc": tot[key] / n, "acc_focus": tot[f"{kind}/correct_focus"] / nf}
    return out


def fit(jit_train, state: ProbeState, frozen: Any, s: FitSettings, *,
        name: str = "probe") -> tuple[ProbeState, dict[str, float]]:
    """Runs `s.steps` updates; logs every `log_every` without blocking on the step in flight.

    Raises:
      FloatingPointError: a non-finite probe loss (names the step range).
    """
    pending: tuple[int, Any] | None = None
    last: dict[str, float] = {}
    last_step = 0
    t0 = time.perf_counter()

    def flush() -> None:
        nonlocal pending, last, last_step
        if pending is None:
            return
        step, m = pending
        pending = None
        last = {k: float(v) for k, v in jax.device_get(m).items()}
        if not np.isfinite(last["loss"]):
            raise FloatingPointError(f"{name}: non-finite probe loss {last['loss']} at step "
                                     f"{step}; the last logged finite loss was at step "
                                     f"{last_step}")
        last_step = step
        logging.info("%s step %d/%d loss %.4f (%.1fs)", name, step, s.steps, last["loss"],
                     time.perf_counter() - t0)

    for step in range(1, s.steps + 1):
        state, m = jit_train(state, frozen)
        if step % s.log_every == 0 or step == s.steps:
            flush()  # the previous logged step, while this one runs
            pending = (step, m)
    flush()
    return state, last
