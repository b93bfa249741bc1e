"""CFG label plumbing for probing (Part 1, SPEC §2.3 and §7): which targets, which positions.

Target groups, in this order (G = 2 · len(levels)):
  ("ancestor", l) for each probed level l: the local class of the token's level-l NT ancestor
                  (`sizes[l]` classes);
  ("boundary", l) for each probed level l: 1 iff the token ends its level-l ancestor's span.
Level 0 is the root (one class) and is never probed. Positions with no label (BOS, EOS, pad)
carry -1 and are not scored. The "focus" subset of every group at level l is the NT-end
positions of level l (nt_boundary[l] = 1): a causal model has read the whole span there, so the
paper's headline ancestor accuracy is measured on it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from physics_lm.data.cfg.task import CFGTask
from physics_lm.models.gpt2 import GPT2
from physics_lm.probing.capture import stacked_fn
from physics_lm.probing.train_probe import ProbeBatch, ProbeProblem

# SPEC §6 / §8.4: share of strings with a unique parse (50 strings each). Labels come from the
# generating tree, so on ambiguous grammars no probe can reach 100% from the string alone.
UNIQUE_PARSE_SHARE = {"cfg3b": 1.0, "cfg3i": 0.14, "cfg3h": 0.84, "cfg3g": 0.24, "cfg3f": 0.62,
                      "cfg3e1": 1.0, "cfg3e2": 1.0, "cfg3j": 0.54, "cfg3k": 0.20}


def probe_levels(task: CFGTask) -> tuple[int, ...]:
    """The NT levels worth probing: 1 .. D-1 (level 0 is the constant root)."""
    return tuple(range(1, task.spec.depth))


def groups(task: CFGTask, levels: Sequence[int]) -> tuple[tuple[str, int, int], ...]:
    """(target, level, num_classes) per group, in the ProbeBatch's G order."""
    sizes = task.spec.sizes
    return (*(("ancestor", l, sizes[l]) for l in levels), *(("boundary", l, 2) for l in levels))


def check_levels(task: CFGTask, levels: Sequence[int]) -> None:
    depth = task.spec.depth
    bad = [l for l in levels if not 1 <= l < depth]
    if bad or not levels:
        raise ValueError(f"probe.levels={list(levels)!r}: levels must be in 1..{depth - 1} "
                         f"for {task.grammar} (non-empty)")


def sample_fn(task: CFGTask, levels: Sequence[int]):
    """A pure `(key, B) -> ProbeBatch` drawing CFG rows on device with the task's own sampler."""
    lv = jnp.asarray(levels, jnp.int32)

    def sample(key: jax.Array, batch_size: int) -> ProbeBatch:
        batch = task.sample(key, batch_size)
        anc_BxTxL = batch.labels["nt_ancestor"][..., lv]
        bnd_BxTxL = batch.labels["nt_boundary"][..., lv]
        end_BxTxL = bnd_BxTxL == 1
        return ProbeBatch(batch.tokens,
                          jnp.concatenate([anc_BxTxL, bnd_BxTxL], axis=-1).astype(jnp.int32),
                          jnp.concatenate([end_BxTxL, end_BxTxL], axis=-1))

    return sample


def make_problem(task: CFGTask, model: GPT2, layer_names: Sequence[str], levels: Sequence[int],
                 axis_rules: Any = ()) -> ProbeProblem:
    """The ProbeProblem of a GPT2 on a CFG task.

    Args:
      task: the run's CFGTask (probing draws fresh rows from the same distribution).
      model: the run's GPT2 module.
      layer_names: hidden states to probe (`capture.residual_layer_names`), the N axis.
      levels: NT levels to probe.
      axis_rules: the mesh's logical axis rules, so the model's sharding constraints apply.
    """
    check_levels(task, levels)
    stacked = stacked_fn(model, layer_names)

    def features_fn(feature_params: Any, frozen: Any, tokens_BxT: jax.Array) -> jax.Array:
        del feature_params  # plain probes read the model as it is
        with nn.logical_axis_rules(axis_rules):
            return stacked(frozen, tokens_BxT)

    return ProbeProblem(sample_fn(task, levels), features_fn,
                        tuple(c for _, _, c in groups(task, levels)))


def ambiguity_note(task: CFGTask) -> str:
    share = UNIQUE_PARSE_SHARE.get(task.grammar)
    known = "unknown" if share is None else f"{share:.0%}"
    return (f"Labels come from the generating tree (SPEC §6). Share of {task.grammar} strings "
            f"with a unique parse: {known}; on ambiguous grammars the reachable accuracy is "
            "below 100%.")
