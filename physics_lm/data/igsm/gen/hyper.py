"""Stage 1: the op of every row and the hyper-parameters of every candidate (SPEC §2.2.1).

This is the one place where op is drawn. A problem's op (its number of solution steps) comes from
two draws of the same "light" law, the min of two uniform integers on [1, max_op] (so
P(op = k) = (2(M-k)+1)/M^2), or the fixed op of an OOD set:
  * `target_ops`: the op each output row asks for (the official loop redraws everything until a
    candidate has it; `sampler.py` matches candidates to rows instead);
  * `draw_hyper`: a candidate's op budget s, with the rest of its graph hyper-parameters.
Later stages only carry the budget out: `design.py` spends s on operands (op = s unless the
structure cannot take that many) and `sampler.py` accepts a candidate for a row of its op.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from physics_lm.data.igsm.gen import rand, streams


class Hyper(NamedTuple):
    """Graph hyper-parameters of one outer attempt (SPEC §2.2.1, 'light' style)."""

    s: jax.Array  # op budget
    n: jax.Array  # abstract budget
    m: jax.Array  # minimum total op
    d: jax.Array  # depth
    w0: jax.Array
    w1: jax.Array
    p: jax.Array  # probability of growing a layer
    e: jax.Array  # number of structure edges (clamped as Graph.__init__ does)


def target_ops(seed: jax.Array, batch_size: int, max_op: int, op: int | None) -> jax.Array:
    """int32[batch_size]: the op each row asks for, from the batch seed (`op` if fixed)."""
    if op is not None:
        return jnp.full(batch_size, op, jnp.int32)
    u = rand.uniform(seed, streams.TARGET_OP, 0, 2 * batch_size).reshape(2, batch_size)
    return jnp.minimum(rand.randint(u[0], 1, max_op), rand.randint(u[1], 1, max_op))


def draw_hyper(seed: jax.Array, max_op: int, max_edge: int, op: int | None,
               s_min: jax.Array | int = 1) -> Hyper:
    """Draws (s, n, m, d, w0, w1, p, e) exactly as `gen_param_light` does.

    `s_min` > 1 draws from the same law conditioned on s >= s_min (the min of two uniform
    integers on [s_min, max_op]); the sampler uses it for rows that need a high op (op <= s)."""
    u = rand.uniform(seed, streams.HYPER, 0, 12)
    if op is None:
        s = jnp.minimum(rand.randint(u[0], s_min, max_op), rand.randint(u[1], s_min, max_op))
    else:
        s = jnp.asarray(op, jnp.int32)
    n = jnp.maximum(rand.randint(u[2], 1, s), rand.randint(u[3], 1, s))
    m = rand.randint(u[4], n, s)
    rd = (s - 1) / (max_edge - 1)
    probs = jax.nn.softmax(-((rd - jnp.array([0.2, 0.5, 0.8])) ** 2))
    cdf = jnp.cumsum(probs)
    dwt = 2 + jnp.sum(u[5:8, None] >= cdf[None, :2], axis=1).astype(jnp.int32)
    d, w0, w1 = dwt[0], jnp.minimum(dwt[1], dwt[2]), jnp.maximum(dwt[1], dwt[2])
    p = u[8]
    min_e = (d - 1) * w0
    e = jnp.minimum(rand.randint(u[9], min_e, max_edge), rand.randint(u[10], min_e, max_edge))
    e = jnp.clip(e, (d - 1) * w0, (d - 1) * w1 * w1)
    return Hyper(s, n, m, d, w0, w1, p, e)
