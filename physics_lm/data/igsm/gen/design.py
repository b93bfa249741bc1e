"""Stage 4: `design`, the operands of every solution step, from the op budget (SPEC §6-§7).

The official `design(s)`: the budget s left over after the necessary parameters' minimum
(`n_op_min`) is spent on extra operands of instance steps (one at a time, uniformly among the
steps that can take one); then each instance step draws its operand count and operands among the
earlier solution parameters (and the random constant RNG), keeping the sort's extra dependency.
The result fixes the op of the candidate. One candidate, no batch axis; S = smax.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from physics_lm.data.igsm.gen import rand, streams
from physics_lm.data.igsm.gen.structure import NA, NI, RNG, SLOT_KIND


def design(seed: jax.Array, h_s: jax.Array, n_op_min: jax.Array, topo_S: jax.Array,
           n_sol: jax.Array, sort_dep: jax.Array, cost_A: jax.Array,
           smax: int) -> tuple[jax.Array, jax.Array, jax.Array]:
    """`design(s)`: extra operands from the op budget, then each instance step's dependencies.

    Returns (deps_Sx4 slots in insertion order (96 = RNG, -1 = none), ops_S, official n_op).
    """
    pos = jnp.arange(smax)
    valid = pos < n_sol
    slot = jnp.maximum(topo_S, 0)
    inst = valid & (jnp.asarray(SLOT_KIND)[slot] == 0)
    max_extra = jnp.where(inst, jnp.maximum(jnp.minimum(pos + 1, 4) - 2, 0), 0)
    n_op = jnp.maximum(n_op_min, h_s)
    n_op = jnp.minimum(n_op - n_op_min, jnp.sum(max_extra)) + n_op_min
    n_fix = n_op - n_op_min

    def body(c):
        extra, t = c
        idx = rand.choice(rand.uniform(seed, streams.DESIGN_EXTRA, t, smax), extra < max_extra)
        return extra + (pos == idx).astype(jnp.int32), t + 1

    extra, _ = jax.lax.while_loop(lambda c: c[1] < n_fix, body,
                                  (jnp.zeros(smax, jnp.int32), jnp.int32(0)))
    uc = rand.uniform(seed, streams.DESIGN_COUNT, 0, 2 * smax)
    n_sample = jnp.where(extra > 0, extra + 2, jnp.where(uc[:smax] < 0.5, 1, 2))
    n_sample = jnp.minimum(jnp.minimum(n_sample, pos + 1), 4)
    full = n_sample == pos + 1
    # Pool positions q: 0 = RNG, q >= 1 = topo[q-1]; valid for q <= r.
    q = jnp.arange(smax + 1)[None, :]
    in_pool = q <= pos[:, None]
    ex = sort_dep[slot]
    has_e = inst & (ex >= 0)
    e_pos = jnp.argmax(topo_S[None, :] == ex[:, None], axis=1) + 1
    is_e = has_e[:, None] & (q == e_pos[:, None])
    ns = n_sample - has_e
    rng_take = (uc[smax:] < 0.5) & (ns > 0) & ~full
    ns = ns - rng_take
    u = rand.uniform(seed, streams.DESIGN_OPERANDS, 0, smax * (smax + 1)).reshape(smax, smax + 1)
    is_rng = rng_take[:, None] & (q == 0)
    cand = in_pool & ~is_e & ~is_rng
    sampled = cand & (rand.ranks(jnp.where(cand, u, 2.0)) < ns[:, None])  # ns of them, uniformly
    include = jnp.where(full[:, None], in_pool, is_e | sampled | is_rng)
    key_q = jnp.where(full[:, None], q.astype(jnp.float32), u)
    key_q = jnp.where(is_e, -3.0, jnp.where(is_rng | (full[:, None] & (q == 0)), -2.0, key_q))
    key_q = jnp.where(include & inst[:, None], key_q, 9.0)
    ordq = rand.sort_order(key_q, 4)  # [S, 4] (a TopK custom call costs ~3x more on CPU)
    kq = jnp.take_along_axis(key_q, ordq, axis=1)
    dep_slot = jnp.where(ordq == 0, RNG, topo_S[jnp.maximum(ordq - 1, 0)])
    deps_Sx4 = jnp.where(kq < 9.0, dep_slot, -1)
    nq = jnp.sum(kq < 9.0, axis=1)
    ops = jnp.where(inst, jnp.where(nq <= 2, 1, nq - 1), 0)
    ops = ops + jnp.where(valid & ~inst, cost_A[jnp.clip(slot - NI, 0, NA - 1)], 0)
    return deps_Sx4, ops, n_op
