"""Stage 3: the backward topological sort of one candidate's necessary parameters (SPEC §5).

The official `reasonable_sort`: a random reverse topological order of the template with a
"needed" stack, and, for instance parameters, an optional extra dependency on a not yet placed
node (class-weighted choice). Its reverse is the solution order. One candidate, no batch axis;
S = smax, the static bound on solution parameters.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from physics_lm.data.igsm.gen import rand, streams
from physics_lm.data.igsm.gen.structure import NA, NI, NP, SLOT_KIND, struct_matrix


def _out_degrees(G_3x4x4: jax.Array, tmpl: jax.Array) -> jax.Array:
    """int32[97]: number of template abstract parameters that depend on each slot."""
    T = tmpl[NI:NI + NA].reshape(3, 4, 4).astype(jnp.int32)  # [i, j, k]
    Gi = G_3x4x4.astype(jnp.int32)  # [i, j, x]
    out_I = Gi * jnp.sum(T, axis=2)[:, :, None]
    far = (jnp.arange(4)[None, :] > jnp.arange(3)[:, None] + 1).astype(jnp.int32)  # [i, k]
    body = jnp.einsum("ijk,ijx->ixk", T * far[:, None, :], Gi)  # lands on A(i+1, x, k)
    out_A = jnp.concatenate([jnp.zeros((1, 4, 4), jnp.int32), body[:2]], axis=0)
    return jnp.concatenate([out_I.reshape(-1), out_A.reshape(-1), jnp.zeros(1, jnp.int32)])


def backward_sort(seed: jax.Array, tmpl: jax.Array, G_3x4x4: jax.Array,
                  smax: int) -> tuple[jax.Array, jax.Array, jax.Array]:
    """`reasonable_sort` of the template `tmpl` (bool[97]): returns (order_S backwards, sort_dep_P,
    ok).

    The loop runs on the template's nodes only (<= smax of them, in slot order) with their
    predecessor matrix built once, instead of on all 97 slots: the same draws' laws (uniform
    choice among the ready nodes, class-weighted choice of the extra dependency) on ~5x smaller
    arrays."""
    u0 = rand.uniform(seed, streams.SORT_PROBS, 0, 2)
    p0 = u0[0]
    u1 = rand.uniform(seed, streams.SORT_PROBS, 1, 2)
    p1 = jnp.abs(jnp.sqrt(-2.0 * jnp.log(jnp.maximum(u1[0], 1e-7))) * jnp.cos(6.2831853 * u1[1]))
    n_nodes = jnp.sum(tmpl)
    (node,) = jnp.nonzero(tmpl, size=smax, fill_value=NP - 1)  # node -> slot
    real = jnp.arange(smax) < n_nodes
    kind = jnp.asarray(SLOT_KIND)[node]
    is_abs, is_inst = (kind == 1) & real, (kind == 0) & real
    # P[a, b]: node b is a structural dependency of node a
    P = struct_matrix(G_3x4x4)[node[None, :], node[:, None]] & real[None, :] & real[:, None]
    out0 = _out_degrees(G_3x4x4, tmpl)[node]
    idx = jnp.arange(smax)

    def cond(c):
        return (c[5] < jnp.minimum(n_nodes, smax)) & c[6]

    def body(c):
        placed, out_deg, stack, sort_dep, order, t, ok = c
        u = rand.uniform(seed, streams.SORT_STEP, t, 2 * smax + 2)
        zero = real & ~placed & (out_deg == 0)
        pool = zero & ((t == 0) | stack)
        ok = jnp.any(pool)
        picked = rand.choice(u[:smax], pool)
        hot = idx == picked
        placed = placed | hot
        preds = P[picked]
        out_deg = out_deg - preds.astype(jnp.int32)
        stack = stack & ~hot
        unplaced = real & ~placed
        zero = unplaced & (out_deg == 0)
        need = ~jnp.any(stack & zero)
        p_inst = is_inst[picked]
        act = p_inst & ((u[2 * smax] < p0) | need) & jnp.any(unplaced)
        pool2 = jnp.where(need, zero, unplaced)
        pick2 = rand.class_choice(u[smax:2 * smax], u[2 * smax + 1], pool2,
                                  is_abs.astype(jnp.int32) + (~stack).astype(jnp.int32), 3, p1)
        sort_dep = jnp.where(act & hot, pick2, sort_dep)
        stack = stack | (act & (idx == pick2))
        stack = stack | (~p_inst & preds)
        order = jnp.where(idx == t, node[picked], order)
        return placed, out_deg, stack, sort_dep, order, t + 1, ok

    init = (jnp.zeros(smax, jnp.bool_), out0, jnp.zeros(smax, jnp.bool_),
            jnp.full(smax, -1, jnp.int32), jnp.full(smax, -1, jnp.int32), jnp.int32(0),
            jnp.bool_(True))
    _, _, _, dep_n, order, _, ok = jax.lax.while_loop(cond, body, init)
    sort_dep = jnp.full(NP + 1, -1, jnp.int32).at[jnp.where(real, node, NP)].set(
        jnp.where(dep_n >= 0, node[jnp.maximum(dep_n, 0)], -1))[:NP]
    return order, sort_dep, ok & (n_nodes <= smax)
