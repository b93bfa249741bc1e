"""Stage 2: structure graph and necessary-parameter choice of one iGSM candidate (SPEC §3-§4).

Everything here works on ONE candidate (no batch axis) with static shapes; the sampler vmaps it.
The procedure follows the official generator step by step (`Graph.init`, `Graph.choose_param`,
`Graph.try_inter`), including its quirks (the stale "remembered" candidate of `choose_param`),
because the problem class is defined by that code. Also the geometry of the parameter slots that
later stages share (which slots exist, structural dependencies of abstract parameters).

Parameter slots (the fixed 97-long parameter axis, letters of the shape legend: P=97):
  * instance I(i, j, k) ("how many item (i+1, k) in each item (i, j)"): slot i*16 + j*4 + k (0-47);
  * abstract A(i, j, k) (category of layer k in item (i, j), k > i): slot 48 + i*16 + j*4 + k;
  * RNG (a random constant): slot 96.
Layers are padded to D=4, widths to W=4, so G_3x4x4[i, j, k] is the edge (i, j) -> (i+1, k).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from physics_lm.data.igsm.gen import rand, streams
from physics_lm.data.igsm.gen.hyper import Hyper

D = 4  # max depth
W = 4  # max width
NI = 48  # instance slots
NA = 48  # abstract slots
RNG = 96
NP = 97

# Static slot tables (numpy, so they fold into the jitted graph as constants).
SLOT_KIND = np.array([0] * NI + [1] * NA + [2], np.int32)
_idx = np.arange(NI)
SLOT_I = np.concatenate([_idx // 16, _idx // 16, [0]]).astype(np.int32)
SLOT_J = np.concatenate([(_idx // 4) % 4, (_idx // 4) % 4, [0]]).astype(np.int32)
SLOT_K = np.concatenate([_idx % 4, _idx % 4, [0]]).astype(np.int32)

# For every abstract slot u = A(i, j, k) and child index x: the child instance slot I(i, j, x)
# and (when k > i + 1) the lower abstract slot A(i+1, x, k), else -1.
ABS_CHILD_INST = np.array(
    [[SLOT_I[NI + a] * 16 + SLOT_J[NI + a] * 4 + x for x in range(W)] for a in range(NA)], np.int32
)
ABS_CHILD_ABS = np.array(
    [
        [
            NI + (SLOT_I[NI + a] + 1) * 16 + x * 4 + SLOT_K[NI + a]
            if SLOT_K[NI + a] > SLOT_I[NI + a] + 1 and SLOT_I[NI + a] + 1 < D - 1
            else -1
            for x in range(W)
        ]
        for a in range(NA)
    ],
    np.int32,
)


class Record(NamedTuple):
    """The official `record`: unused edges (remain_I), unused abstract params (inter_A), chosen
    params (chosen_P) and the order they were chosen in (rank_P; ties broken by slot)."""

    remain_I: jax.Array  # noqa: N815
    inter_A: jax.Array  # noqa: N815
    chosen_P: jax.Array  # noqa: N815
    rank_P: jax.Array  # noqa: N815
    counter: jax.Array  # int32 next rank


class Structure(NamedTuple):
    """Structure graph + chosen (necessary) parameters of one inner try."""

    d: jax.Array
    l_D: jax.Array  # noqa: N815
    G_3x4x4: jax.Array
    rec: Record
    n_op_min: jax.Array
    ok: jax.Array  # False if choose_param hit its iteration cap (never observed)


def _widths(seed: jax.Array, h: Hyper) -> jax.Array:
    """Layer widths (`Graph.init` loop with the `valid` property)."""
    layer = jnp.arange(D)

    def body(t, carry):
        l_D, done = carry
        u = rand.uniform(seed, streams.WIDTHS, t, D + 1)
        inner = layer < h.d - 1
        max_v = jnp.sum(jnp.where(inner, l_D * jnp.roll(l_D, -1), 0))
        min_v = jnp.sum(jnp.where(inner, jnp.roll(l_D, -1), 0))
        pool = (layer < h.d) & (l_D < h.w1)
        full = ~jnp.any(pool)
        idx = rand.choice(u[:D], pool)
        need = max_v < h.e
        stop_eq = ~need & (min_v == h.e)
        coin = u[D] < h.p
        grow = ~done & ~full & (need | (~stop_eq & coin))
        done = done | (~need & (stop_eq | ~coin | full))
        return l_D + (grow & (layer == idx)).astype(jnp.int32), done

    l0 = jnp.where(layer < h.d, h.w0, 0).astype(jnp.int32)
    l_D, _ = jax.lax.fori_loop(0, 2 * D + 2, body, (l0, jnp.bool_(False)))
    return l_D


def _edges(seed: jax.Array, h: Hyper, l_D: jax.Array) -> jax.Array:
    """One random parent per lower item, then the remaining edges uniformly (no replacement)."""
    u = rand.uniform(seed, streams.EDGES, 0, 2 * NI)
    i = jnp.arange(D - 1)[:, None, None]
    j = jnp.arange(W)[None, :, None]
    k = jnp.arange(W)[None, None, :]
    upper = l_D[: D - 1][:, None, None]
    lower = l_D[1:][:, None, None]
    pair = (i < h.d - 1) & (j < upper) & (k < lower)
    parent = rand.randint(u[:12].reshape(D - 1, W), 0, jnp.maximum(l_D[: D - 1], 1)[:, None] - 1)
    G0 = pair & (parent[:, None, :] == j)
    n_remain = h.e - jnp.sum(G0)
    v = jnp.where((pair & ~G0).reshape(-1), u[NI:], 2.0)
    rank = rand.ranks(v)
    extra = (rank < n_remain).reshape(pair.shape) & pair & ~G0
    return G0 | extra


def abs_valid(d: jax.Array, l_D: jax.Array) -> jax.Array:
    """bool[48]: abstract slot A(i, j, k) exists (i < d-1, j < l[i], i < k < d)."""
    i, j, k = SLOT_I[NI:RNG], SLOT_J[NI:RNG], SLOT_K[NI:RNG]
    return (i < d - 1) & (j < l_D[i]) & (k > i) & (k < d)


def inst_possible(d: jax.Array, l_D: jax.Array) -> jax.Array:
    """bool[48]: instance slot I(i, j, k) is in `all_param` (edge or not)."""
    i, j, k = SLOT_I[:NI], SLOT_J[:NI], SLOT_K[:NI]
    return (i < d - 1) & (j < l_D[i]) & (k < l_D[jnp.minimum(i + 1, D - 1)])


def abs_children(G_3x4x4: jax.Array) -> jax.Array:
    """bool[48, 4]: child x exists for the item (i, j) of each abstract slot."""
    i, j = SLOT_I[NI:RNG], SLOT_J[NI:RNG]
    return G_3x4x4[np.minimum(i, D - 2), j]


def abs_cost(G_3x4x4: jax.Array) -> jax.Array:
    """int32[48]: op cost of each abstract parameter (SPEC §7)."""
    c = jnp.sum(abs_children(G_3x4x4), axis=1)
    near = SLOT_K[NI:RNG] == SLOT_I[NI:RNG] + 1
    return jnp.where(near, jnp.maximum(c - 1, 1), jnp.maximum(2 * c - 1, 1))


def closure(start_A: jax.Array, gate_A: jax.Array, G_3x4x4: jax.Array) -> jax.Array:
    """bool[48]: `start_A` plus abstract params reachable downwards through `gate_A` nodes.

    A(i, j, k) reaches A(i+1, x, k) when the edge (i, j) -> (i+1, x) exists; the [i, j, k]
    layout of the abstract axis makes that one small contraction per level.
    """
    R = start_A.reshape(3, 4, 4)
    gate = gate_A.reshape(3, 4, 4)
    for _ in range(D - 2):
        nxt = jnp.any(R[:, :, None, :] & G_3x4x4[:, :, :, None], axis=1)  # [i, x, k]
        nxt = jnp.concatenate([jnp.zeros((1, 4, 4), jnp.bool_), nxt[:2]], axis=0)
        R = R | (nxt & gate)
    return R.reshape(-1)


def child_edges(clo_A: jax.Array, G_3x4x4: jax.Array) -> jax.Array:
    """bool[48]: instance edges I(i, j, x) that are children of any abstract param in clo_A."""
    return (G_3x4x4 & jnp.any(clo_A.reshape(3, 4, 4), axis=2)[:, :, None]).reshape(-1)


def _try_inter(u, rec: Record, G, cost_A):
    """Cost and resulting record of committing abstract index u (`try_inter`)."""
    clo = closure(jnp.arange(NA) == u, rec.inter_A, G)
    edges = child_edges(clo, G) & rec.remain_I
    count = jnp.sum(jnp.where(clo, cost_A, 0)) + jnp.sum(edges)
    new = jnp.concatenate([edges, clo, jnp.zeros(1, jnp.bool_)])
    rec2 = Record(rec.remain_I & ~edges, rec.inter_A & ~clo, rec.chosen_P | new,
                  jnp.where(new, rec.counter, rec.rank_P), rec.counter + 1)
    return count, rec2


def _pick_fix(seed, rec: Record, n_take) -> Record:
    """Adds `n_take` uniformly chosen unused edges (random order) to `chosen`."""
    v = jnp.where(rec.remain_I, rand.uniform(seed, streams.FIX_EDGES, 0, NI), 2.0)
    rank = rand.ranks(v)
    take = rec.remain_I & (rank < n_take)
    new = jnp.concatenate([take, jnp.zeros(NA + 1, jnp.bool_)])
    full_rank = jnp.concatenate([rank, jnp.zeros(NA + 1, rank.dtype)]).astype(jnp.int32)
    return Record(rec.remain_I & ~take, rec.inter_A, rec.chosen_P | new,
                  jnp.where(new, rec.counter + full_rank, rec.rank_P), rec.counter + NI)


def _sel(m, a, b):
    return jax.tree.map(lambda x, y: jnp.where(m, x, y), a, b)


CHOOSE_CAP = 96  # iterations of the choose_param loop (one `diff` each); never reached in tests


def _choose_param(seed, h: Hyper, l_D, G):
    """`Graph.choose_param(n, m)`: abstract params by the largest fitting diff, then random edges.

    One while-loop iteration visits one `diff` of the official double loop; a round restarts at
    diff 1 after a commit or after diff d-1; the loop ends when a round starts with no budget.
    """
    d = h.d
    cost_A = abs_cost(G)
    ch = jnp.sum(G, axis=2)
    ii = jnp.arange(D - 1)[:, None]
    jj = jnp.arange(W)[None, :]
    cprime = jnp.where(ch > 1, ch - 1, ch)
    per_item = cprime + jnp.maximum(2 * ch - 1, 0) * (d - ii - 2)
    total = h.e + jnp.sum(jnp.where((ii < d - 1) & (jj < l_D[: D - 1, None]), per_item, 0))
    n0 = jnp.minimum(h.n, total)
    n_fix = h.m - n0
    rec0 = Record(G.reshape(-1), abs_valid(d, l_D), jnp.zeros(NP, jnp.bool_),
                  jnp.zeros(NP, jnp.int32), jnp.int32(0))
    diff_A = jnp.asarray(SLOT_K[NI:RNG] - SLOT_I[NI:RNG])

    def cond(c):
        return (c[7] == 0) & (c[8] < CHOOSE_CAP)

    def body(c):
        rec, prev, prev_count, n, lowest, highest, diff, _, t = c
        finished = (diff == 1) & (n <= 0)
        try_set = rec.inter_A & (diff_A == diff)
        empty = ~jnp.any(try_set)
        u = rand.choice(rand.uniform(seed, streams.CHOOSE_PARAM, t, NA), try_set)
        count, tmp = _try_inter(u, rec, G, cost_A)
        early = ~empty & (diff == lowest) & (count > n)
        fits = ~empty & ~early & (count <= n)
        remember = fits & (diff < highest)
        commit = fits & (diff >= highest)
        revert = ~empty & ~early & (count > n)
        keep = ~finished
        lowest2 = jnp.where(keep & empty & (diff == lowest), lowest + 1, lowest)
        highest2 = jnp.where(keep & empty & (diff != lowest) & (diff == highest), highest - 1,
                             highest)
        rec2 = _sel(keep & commit, tmp, _sel(keep & revert, prev, rec))
        prev2 = _sel(keep & remember, tmp, prev)
        prev_count2 = jnp.where(keep & remember, count, prev_count)
        n2 = n - jnp.where(keep & commit, count, 0) - jnp.where(keep & revert, prev_count, 0)
        nxt = diff + 1
        diff2 = jnp.where(commit | revert | (nxt > d - 1), 1, nxt)
        state = jnp.where(finished, 1, jnp.where(early, 2, 0))
        return (rec2, prev2, prev_count2, n2, lowest2, highest2, jnp.where(keep, diff2, diff),
                state, t + 1)

    init = (rec0, rec0, jnp.int32(0), n0, jnp.int32(1), d - 1, jnp.int32(1), jnp.int32(0),
            jnp.int32(0))
    rec, _, _, n, _, _, _, state, _ = jax.lax.while_loop(cond, body, init)
    early = state == 2
    n_remain = jnp.sum(rec.remain_I)
    n_fix_v2 = jnp.where(early, jnp.minimum(n + n_fix, n_remain), jnp.minimum(n_fix, n_remain))
    n_op_min = jnp.where(early, h.m - n - n_fix + n_fix_v2, h.m - n_fix + n_fix_v2)
    rec = _pick_fix(seed, rec, n_fix_v2)
    return rec, n_op_min, state != 0


def build_structure(seed: jax.Array, h: Hyper) -> Structure:
    """One inner try up to (not including) the backward sort: widths, edges, chosen params."""
    l_D = _widths(seed, h)
    G = _edges(seed, h, l_D)
    rec, n_op_min, ok = _choose_param(seed, h, l_D, G)
    return Structure(h.d, l_D, G, rec, n_op_min, ok)


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
