"""Stage 5: a pool of iGSM candidates (outer attempts of the official generator), in pure JAX.

Per candidate: hyper-parameters (`hyper.py`) -> inner loop (structure + backward sort, retried
with the SAME hyper-parameters until the sort succeeds, as `Problem.gen` does) -> `design`. That
fixes the solution, hence op and template bin, so acceptance is decided here and the result is a
`Template` of the necessary parameters; `fill_all` + `design_unused` (the unnecessary
parameters, which never feed necessary ones) run afterwards on the selected rows only
(`unnecessary.add_unused`), saving most of the work on rejected candidates.

Inner retries with static shapes: the first try runs on the whole pool; the ~15 % of candidates
whose backward sort failed then go through a retry pool of R = C/4 lanes. Each retry round deals
the lanes out to the n still-failing candidates in turn (lanes j, j+n, j+2n, ... run the
consecutive tries t_j, t_j+1, ... of candidate j) and keeps each candidate's first success --
exactly the official sequence "retry with the same hyper-parameters until the sort succeeds",
because tries are independent draws indexed by their try number. Most candidates are done after
one round; the rare ones needing 10-35 tries get many lanes each in the next rounds. (A
`while_loop` over the whole pool would cost max-tries full passes, ≈ 8 for C = 1024.)
Candidates still failing after MAX_INNER_TRIES tries (official: 1,000, then the
hyper-parameters are redrawn) are marked not ok and simply not used; the count is returned.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from physics_lm.data.igsm.gen import rand, streams
from physics_lm.data.igsm.gen.design import design
from physics_lm.data.igsm.gen.hyper import Hyper, draw_hyper
from physics_lm.data.igsm.gen.sort import backward_sort
from physics_lm.data.igsm.gen.structure import NI, Record, abs_cost, build_structure

MAX_INNER_TRIES = 64  # official: 1,000; ~1.27 tries are needed on average (SPEC §2)


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


def _inner_try(seed: jax.Array, h: Hyper, smax: int):
    st = build_structure(seed, h)
    tmpl = st.rec.chosen_P
    order, sort_dep, ok = backward_sort(seed, tmpl, st.G_3x4x4, smax)
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
    bin: jax.Array  # template bin when the split needed it for acceptance, else -1


def _design_stage(seed, h: Hyper, inner, smax: int) -> Candidate:
    st, topo, n_sol, sort_dep, ok = inner
    G = st.G_3x4x4
    deps_Sx4, ops_S, n_op = design(seed, h.s, st.n_op_min, topo, n_sol, sort_dep, abs_cost(G),
                                   smax)
    is_inst = (topo >= 0) & (topo < NI)
    hit = (topo[None, :] == jnp.arange(NI)[:, None]) & is_inst[None, :]  # [48, S]
    ideps = jnp.where(jnp.any(hit, axis=1)[:, None], jnp.einsum(
        "is,sq->iq", hit.astype(jnp.int32), deps_Sx4 + 1) - 1, -1)
    op_count = jnp.sum(ops_S)
    tpl = Template(st.d, st.l_D, G, st.rec.chosen_P, topo, n_sol, ideps, op_count, n_op,
                   ok & (op_count == n_op))
    return Candidate(tpl, st.rec, seed, jnp.int32(-1))


def candidates(seeds_C: jax.Array, max_op: int, max_edge: int, op: int | None, smax: int,
               s_min_C: jax.Array | None = None):
    """Draws C outer attempts from uint32 seeds (op budget conditioned on s >= s_min_C).

    Returns (Candidate with leading dim C, tries_C, n_dropped): `n_dropped` counts candidates
    whose inner loop did not succeed within MAX_INNER_TRIES tries (marked not ok).
    """
    C = seeds_C.shape[0]
    R = max(C // 4, 1)
    if s_min_C is None:
        s_min_C = jnp.ones(C, jnp.int32)
    h = jax.vmap(lambda s, lo: draw_hyper(s, max_op, max_edge, op, lo))(seeds_C, s_min_C)
    try_fn = jax.vmap(lambda s, t, hh: _inner_try(rand.sub_seed(s, streams.INNER_TRY, t), hh, smax))
    inner = try_fn(seeds_C, jnp.zeros(C, jnp.int32), h)
    done = inner[4]
    next_try = jnp.ones(C, jnp.int32)  # the next try number of each failing candidate
    tries = jnp.ones(C, jnp.int32)
    lane = jnp.arange(R)

    def cond(c):
        _, done, next_try, _ = c
        return jnp.any(~done & (next_try < MAX_INNER_TRIES))

    def body(c):
        inner, done, next_try, tries = c
        live = ~done & (next_try < MAX_INNER_TRIES)
        n_live = jnp.maximum(jnp.sum(live), 1)
        (idx,) = jnp.nonzero(live, size=R, fill_value=C)
        cand = idx[lane % n_live]  # C = no candidate for this lane
        safe = jnp.minimum(cand, C - 1)
        offset = lane // n_live  # lanes j, j + n, j + 2n, ... run consecutive tries of j
        t = next_try[safe] + offset
        use = (cand < C) & (t < MAX_INNER_TRIES)
        res = try_fn(seeds_C[safe], t, jax.tree.map(lambda x: x[safe], h))
        ok = res[4] & use
        # First success per candidate: the smallest try number among its successful lanes.
        first = jnp.full(C, MAX_INNER_TRIES, jnp.int32).at[jnp.where(ok, cand, C)].min(
            t, mode="drop")
        win = ok & (t == first[safe])
        inner = jax.tree.map(lambda a, b: a.at[jnp.where(win, cand, C)].set(b, mode="drop"),
                             inner, res)
        got = first < MAX_INNER_TRIES
        tries = jnp.where(got, first + 1, tries)
        given = jnp.zeros(C, jnp.int32).at[jnp.where(use, cand, C)].add(1, mode="drop")
        next_try = jnp.where(got, next_try, next_try + given)
        return inner, done | got, next_try, tries

    inner, done, next_try, tries = jax.lax.while_loop(
        cond, body, (inner, done, next_try, tries))
    inner = (*inner[:4], done)
    cand = jax.vmap(lambda s, hh, inn: _design_stage(s, hh, inn, smax))(seeds_C, h, inner)
    return cand, jnp.where(done, tries, MAX_INNER_TRIES), jnp.sum(~done)
