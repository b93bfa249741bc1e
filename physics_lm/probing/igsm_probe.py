"""The V-probe of Part 2.1 (§4; Appendix B, E, F.2) as a `ProbeProblem` for `train_probe`.

The language model is frozen. The trainable state of one V-probe is a rank-r update of the input
token embedding (ΔE = A·B, `models/lora.py` with B = 0 at init, so step 0 is the frozen model)
and a linear head per task on a hidden state read at the ``<end>`` of a query
(`igsm_queries.py`). With `delta="per_task"` (the paper) every task has its own ΔE and its
queries run in their own packed forward pass (the tasks' passes are vmapped); `"shared"` fits one
ΔE for all tasks in a single pass (cheaper by the number of tasks; a multi-task probe).

Every step draws fresh problems with the sampler *inside* the jitted probe step (no host data):
`sample_fn(key, B)` samples B problems with probe arrays, draws the queries and packs them.
The batch's `inputs` carry, besides the packed sequences, each query's metadata (task, column,
row, distance to the question) for the reports of `igsm_run.py`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from physics_lm.data.igsm.task import IGSMTask
from physics_lm.models import lora
from physics_lm.models.gpt2 import GPT2
from physics_lm.probing import igsm_queries as iq
from physics_lm.probing.train_probe import ProbeBatch, ProbeProblem

DELTAS = ("per_task", "shared")


def forward_groups(tasks: Sequence[str], delta: str) -> tuple[tuple[str, ...], ...]:
    """The tasks of each packed forward pass (one ΔE each)."""
    return tuple((t,) for t in tasks) if delta == "per_task" else (tuple(tasks),)


def sample_fn(task: IGSMTask, tasks: Sequence[str], queries: int, delta: str):
    """A pure `(key, B) -> ProbeBatch`; labels [B, Q, G] (G = len(tasks), -1 off the query's
    own task), focus = positives (binary tasks) or known parameters (`value`)."""
    tasks = tuple(tasks)
    groups = forward_groups(tasks, delta)
    F = len(groups)
    context = task.seq_len

    def sample(key: jax.Array, batch_size: int) -> ProbeBatch:
        batch = task.sample(jax.random.fold_in(key, 0), batch_size)
        q = iq.build_queries(jax.random.fold_in(key, 1), batch, tasks, queries, task.fmt)
        # queries are task-major: forward group f holds the queries of its tasks, in order
        per = q.labels.shape[1] // F
        parts = [iq.pack(batch.tokens, jax.tree.map(
            lambda x, f=f: x[:, f * per:(f + 1) * per] if x.ndim > 1 else x[f * per:(f + 1) * per],
            q), context) for f in range(F)]
        packed = jax.tree.map(lambda *xs: jnp.stack(xs, axis=1), *parts)  # [B, F, ...]
        onehot_QxG = q.task[:, None] == jnp.arange(len(tasks))[None, :]
        labels = jnp.where(onehot_QxG[None], q.labels[..., None], -1)
        is_value_G = jnp.asarray([t == "value" for t in tasks])
        focus = jnp.where(is_value_G, labels < 23, labels == 1) & (labels >= 0)
        meta = {"task": jnp.broadcast_to(q.task, q.labels.shape), "column": q.column,
                "row": q.row, "dist": q.dist, "label": q.labels,
                "op": jnp.broadcast_to(batch.labels["op"][:, None], q.labels.shape),
                "abstract": jnp.take_along_axis(batch.labels["probe_abstract"], q.column, 1)}
        return ProbeBatch({"packed": packed, "meta": meta}, labels.astype(jnp.int32), focus)

    return sample


def init_deltas(model_params_shapes: Any, n_forwards: int, rank: int, qv_rank: int = 0):
    """`key -> adapters` stacked over the forward groups (leading F on every leaf)."""

    def init(key: jax.Array) -> Any:
        keys = jax.random.split(key, n_forwards)
        return jax.vmap(lambda k: lora.init_adapters(k, model_params_shapes, qv_rank=qv_rank,
                                                     embed_rank=rank))(keys)

    return init


def make_problem(task: IGSMTask, model: GPT2, model_params_shapes: Any,
                 layer_names: Sequence[str], tasks: Sequence[str] = iq.TASKS,
                 queries: int = 10, delta: str = "per_task", rank: int = 8, qv_rank: int = 0,
                 axis_rules: Any = ()) -> ProbeProblem:
    """The V-probe ProbeProblem of a GPT2 on iGSM problems of `task` (with probe arrays).

    Args:
      task: problems the probe trains on (`with_probes` is switched on here).
      model, model_params_shapes: the frozen model and its params' shapes (for ΔE's shape).
      layer_names: hidden states read at <end> (`capture.residual_layer_names`), the N axis.
      tasks, queries: probe tasks and queries per task and problem (`igsm_queries.py`).
      delta: "per_task" or "shared" (module docstring); rank: ΔE's rank (the paper: 8);
      qv_rank: rank of an extra Q/V update of every layer (0 = the V-probe; Part 2.2's
      regret detector v2 uses 2 with rank 32).
    """
    if delta not in DELTAS:
        raise ValueError(f"delta={delta!r}: one of {DELTAS}")
    unknown = [t for t in tasks if t not in iq.TASKS]
    if unknown or not tasks:
        raise ValueError(f"tasks={list(tasks)!r}: a non-empty subset of {iq.TASKS}")
    task = task.probed()
    names = tuple(layer_names)
    groups = forward_groups(tasks, delta)

    def one_forward(frozen, adapters, p: iq.Packed):
        params = lora.merge(frozen, adapters)
        with nn.logical_axis_rules(axis_rules):
            _, acts = model.apply({"params": params}, p.tokens, capture=names,
                                  deterministic=True, positions_BxT=p.positions,
                                  segments=p.layout())
        h_NxBxTxD = jnp.stack([acts[n].astype(jnp.float32) for n in names])
        return jnp.take_along_axis(h_NxBxTxD, p.end[None, :, :, None], axis=2)  # [N, B, q, D]

    def features_fn(feature_params: Any, frozen: Any, inputs: Any) -> jax.Array:
        out = jax.vmap(one_forward, in_axes=(None, 0, 1))(frozen, feature_params,
                                                          inputs["packed"])
        F, N, B, q, D = out.shape
        return jnp.moveaxis(out, 0, 2).reshape(N, B, F * q, D)

    return ProbeProblem(sample_fn(task, tasks, queries, delta), features_fn,
                        tuple(iq.NUM_CLASSES[t] for t in tasks),
                        init_deltas(model_params_shapes, len(groups), rank, qv_rank))
