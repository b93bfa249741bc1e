"""Dependency template of one iGSM candidate in pure JAX (SPEC §5-§8), on top of `structure.py`.

Follows the official `reasonable_sort` (backward random topological order with a "needed" stack
and optional extra dependencies), `design` (operand counts from the op budget), `fill_all`,
`design_unused` / `fill_chosen` / `add_param` (unnecessary parameters), with their quirks.
One candidate, no batch axis; S = static bound on solution parameters.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from physics_lm.data.igsm.gen import rand
from physics_lm.data.igsm.gen.structure import (
    ABS_CHILD_ABS,
    ABS_CHILD_INST,
    NA,
    NI,
    NP,
    RNG,
    SLOT_KIND,
    Record,
    abs_children,
)


class Template(NamedTuple):
    """Everything the renderer, the hash and the probe labels need about one problem.

    l_D: layer widths (0 beyond d); G_3x4x4: structure edges; tmpl_P: the parameter is in the
    problem's template (RNG excluded); topo_S: solution order as slots, -1 padded, the last
    valid one is the question; ideps_48x4: instance dependencies in insertion order (96 = RNG,
    -1 = none).
    """

    d: jax.Array
    l_D: jax.Array  # noqa: N815
    G_3x4x4: jax.Array
    tmpl_P: jax.Array  # noqa: N815
    topo_S: jax.Array  # noqa: N815
    n_sol: jax.Array  # number of solution parameters
    ideps_48x4: jax.Array
    op: jax.Array  # sum of per-step ops of the solution (= number of '=' chains)
    n_op: jax.Array  # the official bookkeeping value compared against the target op
    ok: jax.Array  # bool: valid try (sort succeeded, no cap hit)


def struct_preds(G_3x4x4: jax.Array) -> jax.Array:
    """int32[48, 8]: structural dependencies (slots, -1 = none) of every abstract slot."""
    kids = abs_children(G_3x4x4)
    inst = jnp.where(kids, jnp.asarray(ABS_CHILD_INST), -1)
    low = jnp.where(kids & (jnp.asarray(ABS_CHILD_ABS) >= 0), jnp.asarray(ABS_CHILD_ABS), -1)
    return jnp.concatenate([inst, low], axis=1)


def struct_matrix(G_3x4x4: jax.Array) -> jax.Array:
    """bool[97, 97]: S[v, u] = abstract u depends structurally on v."""
    preds = struct_preds(G_3x4x4)
    hit = jnp.any(preds[:, :, None] == jnp.arange(NP)[None, None, :], axis=1)  # [48 u, 97 v]
    return jnp.concatenate([jnp.zeros((NP, NI), jnp.bool_), hit.T, jnp.zeros((NP, 1), jnp.bool_)],
                           axis=1)


def _out_degrees(G_3x4x4: jax.Array, tmpl: jax.Array) -> jax.Array:
    """int32[97]: number of template abstract parameters that depend on each slot."""
    T = tmpl[NI:NI + NA].reshape(3, 4, 4).astype(jnp.int32)  # [i, j, k]
    Gi = G_3x4x4.astype(jnp.int32)  # [i, j, x]
    out_I = Gi * jnp.sum(T, axis=2)[:, :, None]
    far = (jnp.arange(4)[None, :] > jnp.arange(3)[:, None] + 1).astype(jnp.int32)  # [i, k]
    body = jnp.einsum("ijk,ijx->ixk", T * far[:, None, :], Gi)  # lands on A(i+1, x, k)
    out_A = jnp.concatenate([jnp.zeros((1, 4, 4), jnp.int32), body[:2]], axis=0)
    return jnp.concatenate([out_I.reshape(-1), out_A.reshape(-1), jnp.zeros(1, jnp.int32)])


def _backward_sort(seed, tmpl, G_3x4x4, smax: int):
    """`reasonable_sort`: returns (order_S backwards, sort_dep_P, ok).

    The loop runs on the template's nodes only (<= smax of them, in slot order) with their
    predecessor matrix built once, instead of on all 97 slots: the same draws' laws (uniform
    choice among the ready nodes, class-weighted choice of the extra dependency) on ~5x smaller
    arrays."""
    u0 = rand.uniform(seed, 6, 0, 2)
    p0 = u0[0]
    u1 = rand.uniform(seed, 6, 1, 2)
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
        u = rand.uniform(seed, 7, t, 2 * smax + 2)
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


def _design(seed, h_s, n_op_min, topo_S, n_sol, sort_dep, cost_A, smax: int):
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
        idx = rand.choice(rand.uniform(seed, 8, t, smax), extra < max_extra)
        return extra + (pos == idx).astype(jnp.int32), t + 1

    extra, _ = jax.lax.while_loop(lambda c: c[1] < n_fix, body,
                                  (jnp.zeros(smax, jnp.int32), jnp.int32(0)))
    uc = rand.uniform(seed, 9, 0, 2 * smax)
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
    u = rand.uniform(seed, 10, 0, smax * (smax + 1)).reshape(smax, smax + 1)
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


def _fill_scan(inter, chosen, G, d, l_D, edge_ch, uppers, lower_min):
    """The stamp-quirk scan shared by `fill_all` (loop 2) and `fill_chosen` (upper layers).

    uppers: list of (static upper, bool active); lower_min: dynamic first `lower`.
    """
    for upper, active in uppers:
        alive = active
        for lower in range(upper + 2, 4):
            for j in range(4):
                on = alive & (lower < d) & (lower >= lower_min) & (j < l_D[upper])
                cond = on & ~inter[upper * 16 + j * 4 + upper + 1]
                low = jnp.array([(upper + 1) * 16 + x * 4 + lower for x in range(4)])
                blocked = cond & jnp.any(G[upper, j] & inter[low])
                alive = alive & ~blocked
                tgt = upper * 16 + j * 4 + lower
                mv = cond & ~blocked & inter[tgt]
                inter = inter.at[tgt].set(inter[tgt] & ~mv)
                chosen = chosen.at[NI + tgt].set(chosen[NI + tgt] | mv)
    return inter, chosen


def _fill_all(rec: Record, G, d, l_D):
    """`fill_all`: abstract params fully determined by chosen edges become available."""
    edge_ch = rec.chosen_P[:NI]
    i, j, k = np.arange(NA) // 16, (np.arange(NA) // 4) % 4, np.arange(NA) % 4
    kids = abs_children(G)
    done = jnp.all(~kids | edge_ch[jnp.asarray(ABS_CHILD_INST)], axis=1)
    mv = rec.inter_A & jnp.asarray(k == i + 1) & done & jnp.asarray(i < 3) & (jnp.asarray(j) >= 0)
    inter = rec.inter_A & ~mv
    chosen = rec.chosen_P.at[NI:NI + NA].set(rec.chosen_P[NI:NI + NA] | mv)
    inter, chosen = _fill_scan(inter, chosen, G, d, l_D, edge_ch,
                               [(u, u < d - 1) for u in range(2)], 0)
    return rec._replace(inter_A=inter, chosen_P=chosen)


def _fill_chosen(inter, chosen, G, d, l_D, slot):
    """`fill_chosen(param)` after the unused instance parameter `slot` = I(i, j, k) joins."""
    i, j = slot // 16, (slot // 4) % 4
    ar = jnp.arange(NA)
    edge_ch = chosen[:NI]
    kids = jnp.any(G[:, :, :] & ((jnp.arange(3)[:, None] == i) & (jnp.arange(4)[None, :] == j))
                   [:, :, None], axis=(0, 1))
    all_done = jnp.all(~kids | edge_ch[i * 16 + j * 4 + jnp.arange(4)])

    def move(inter, chosen, tgt, m):
        hit = (ar == tgt) & m
        return inter & ~hit, chosen | jnp.concatenate([jnp.zeros(NI, jnp.bool_), hit,
                                                       jnp.zeros(1, jnp.bool_)])

    inter, chosen = move(inter, chosen, i * 16 + j * 4 + i + 1, all_done)
    alive = all_done
    for lower in range(2, 4):
        on = alive & (lower >= i + 2) & (lower < d)
        low = jnp.clip((i + 1) * 16 + jnp.arange(4) * 4 + lower, 0, NA - 1)
        blocked = on & jnp.any(kids & inter[low])
        alive = alive & ~blocked
        inter, chosen = move(inter, chosen, i * 16 + j * 4 + lower, on & ~blocked)
    return _fill_scan(inter, chosen, G, d, l_D, edge_ch,
                      [(u, all_done & (u <= i - 1)) for u in (2, 1, 0)], i + 1)
