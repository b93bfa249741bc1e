"""A pool of complete iGSM candidates (outer attempts of the official generator), in pure JAX.

Per candidate: hyper-parameters -> inner loop (structure + backward sort, retried with the SAME
hyper-parameters until the sort succeeds, as `Problem.gen` does) -> `design`. That fixes the
solution, hence op and template bin, so acceptance is decided here; `fill_all` +
`design_unused` (the unnecessary parameters, which never feed necessary ones) run afterwards on
the selected rows only (`add_unused`), saving most of the work on rejected candidates.

Inner retries with static shapes: the first try runs on the whole pool; the ~20 % of candidates
whose backward sort failed are compacted into a retry pool of C/4 lanes that loops until all of
them succeeded. A `while_loop` over the whole pool would cost (max tries over C lanes) full
passes (≈ 8 for C = 1024) instead of ≈ 1 + 4/4. Candidates that do not fit in the retry pool
(never observed; the count is returned) are marked not ok and simply not used.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from physics_lm.data.igsm import rand
from physics_lm.data.igsm.structure import (
    NI,
    Hyper,
    Record,
    abs_cost,
    build_structure,
    draw_hyper,
)
from physics_lm.data.igsm.template import Template, _backward_sort, _design, _fill_all
from physics_lm.data.igsm.unused import design_unused

MAX_INNER_TRIES = 64  # official: 1,000; ~1.27 tries are needed on average (SPEC §2)


def _inner_try(seed: jax.Array, h: Hyper, smax: int):
    st = build_structure(seed, h)
    tmpl = st.rec.chosen_P
    order, sort_dep, ok = _backward_sort(seed, tmpl, st.G_3x4x4, smax)
    n_sol = jnp.sum(tmpl).astype(jnp.int32)
    idx = jnp.arange(smax)
    topo = jnp.where(idx < n_sol, order[jnp.clip(n_sol - 1 - idx, 0, smax - 1)], -1)
    return st, topo, n_sol, sort_dep, ok & st.ok


class Candidate(NamedTuple):
    """A candidate up to `design`: enough to decide acceptance (op, template bin). The
    unnecessary parameters (`add_unused`) are only drawn for the rows that get selected."""

    tpl: Template  # tmpl_P holds the necessary parameters only, until add_unused
    rec: Record  # the official record after `design`, needed by `fill_all`/`design_unused`
    seed: jax.Array  # uint32


def _design_stage(seed, h: Hyper, inner, smax: int) -> Candidate:
    st, topo, n_sol, sort_dep, ok = inner
    G = st.G_3x4x4
    deps_Sx4, ops_S, n_op = _design(seed, h.s, st.n_op_min, topo, n_sol, sort_dep, abs_cost(G),
                                    smax)
    is_inst = (topo >= 0) & (topo < NI)
    hit = (topo[None, :] == jnp.arange(NI)[:, None]) & is_inst[None, :]  # [48, S]
    ideps = jnp.where(jnp.any(hit, axis=1)[:, None], jnp.einsum(
        "is,sq->iq", hit.astype(jnp.int32), deps_Sx4 + 1) - 1, -1)
    op_count = jnp.sum(ops_S)
    tpl = Template(st.d, st.l_D, G, st.rec.chosen_P, topo, n_sol, ideps, op_count, n_op,
                   ok & (op_count == n_op))
    return Candidate(tpl, st.rec, seed)


def add_unused(c: Candidate) -> Template:
    """`fill_all` + `design_unused` for one selected candidate: the full problem template."""
    t = c.tpl
    rec = _fill_all(c.rec, t.G_3x4x4, t.d, t.l_D)
    tmpl, ideps = design_unused(c.seed, rec, t.tmpl_P, t.ideps_48x4, t.G_3x4x4, t.d, t.l_D)
    return t._replace(tmpl_P=tmpl, ideps_48x4=ideps)


def candidates(seeds_C: jax.Array, max_op: int, max_edge: int, op: int | None, smax: int):
    """Draws C outer attempts from uint32 seeds.

    Returns (Candidate with leading dim C, tries_C, n_overflow): `n_overflow` counts candidates
    dropped because the retry pool was full.
    """
    C = seeds_C.shape[0]
    R = max(C // 4, 1)
    h = jax.vmap(lambda s: draw_hyper(s, max_op, max_edge, op))(seeds_C)
    try_fn = jax.vmap(lambda s, hh: _inner_try(s, hh, smax))
    first = try_fn(jax.vmap(lambda s: rand.sub_seed(s, 20, 0))(seeds_C), h)
    failed = ~first[4]
    (idx,) = jnp.nonzero(failed, size=R, fill_value=C)
    n_overflow = jnp.maximum(jnp.sum(failed) - R, 0)
    safe = jnp.minimum(idx, C - 1)
    h_R = jax.tree.map(lambda x: x[safe], h)
    seeds_R = seeds_C[safe]
    sub = jax.tree.map(lambda x: x[safe], first)

    def cond(c):
        return jnp.any(~c[0][4] & (idx < C)) & (c[1] < MAX_INNER_TRIES)

    def body(c):
        res, t = c
        new = try_fn(jax.vmap(lambda s: rand.sub_seed(s, 20, t))(seeds_R), h_R)
        keep = res[4]
        res = jax.tree.map(lambda a, b: jnp.where(keep.reshape((-1,) + (1,) * (a.ndim - 1)), a, b),
                           res, new)
        return res, t + 1

    sub, t_last = jax.lax.while_loop(cond, body, (sub, jnp.int32(1)))
    inner = jax.tree.map(lambda a, b: a.at[idx].set(b, mode="drop"), first, sub)
    ok = inner[4] & ~(failed & ~jnp.zeros(C, jnp.bool_).at[idx].set(True, mode="drop"))
    inner = (*inner[:4], ok)
    cand = jax.vmap(lambda s, hh, inn: _design_stage(s, hh, inn, smax))(seeds_C, h, inner)
    tries = jnp.where(failed, t_last, 1)
    return cand, tries, n_overflow
