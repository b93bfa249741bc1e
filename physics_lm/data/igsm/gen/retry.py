"""Stage 9 (Part 2.2 retry data): the wrong parameters written before each solution sentence.

Before solution sentence r (0-based: label row r of `probe_arrays`) the official retry
generators (SPEC §16) insert ``Define <X> as BACK.`` with probability p, again with p, ... while
candidates remain, each X drawn uniformly without repetition at that spot from the kind's
candidates (host reference and the exact sets: `text/retry.py`):

  retry       existing parameters not yet computable at row r and not yet defined
              (``~can_next & ~known``; a non-existent one always has can_next = 1);
  retry_weak  the necessary parameters at solution positions r, r+1, ...;
  retry_miss  every existing parameter not yet defined.

With static shapes: the count before sentence r is min(G_r, n_r), G_r geometric with
P(G_r >= k) = p^k (inverse CDF of one uniform: exact, no per-sentence cap), n_r the number of
candidates; the k_r picks are the k_r smallest of i.i.d. keys over the candidates, in order (a
uniformly random ordered k_r-subset, as the official `random.choice` + `remove` loop). The
BACK sentences of a row go to a pool of `n_back_slots` slots in sentence order; the pool is sized
so that a row needs more with probability < 1e-6 (`back_capped` reports it: the last draws are
dropped).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp

from physics_lm.data.igsm.gen import rand, streams
from physics_lm.data.igsm.gen.candidate import Template
from physics_lm.data.igsm.gen.structure import (
    NI,
    NP,
    RNG,
    abs_valid,
    inst_possible,
    struct_preds,
)

RETRY_KINDS = ("none", "retry", "retry_weak", "retry_miss")
MAX_RATE = 0.75  # the pool grows as 1/(1-p)^2; the papers' grids stop at 0.5
SCAN_PICKS = 24  # `ordered_picks`: a loop up to this many BACK slots, ranks beyond
N_ALL = 72  # `all_param` columns: at most 48 instance pairs + 24 abstract parameters (SPEC §22)


class Backs(NamedTuple):
    """The BACK sentences of one row, in text order ([N] = `n_back_slots`, [S] = positions)."""

    slot_N: jax.Array  # noqa: N815  parameter slot of each BACK sentence (-1: unused)
    pos_N: jax.Array  # noqa: N815  the solution position it precedes (S: unused)
    count_S: jax.Array  # noqa: N815  BACK sentences drawn before each solution sentence
    n_cand_S: jax.Array  # noqa: N815  candidates before each solution sentence
    capped: jax.Array  # bool: more were drawn than the pool holds (the last ones are dropped)


def n_back_slots(rate: float, n_sentences: int) -> int:
    """Static pool size: the mean plus 8 standard deviations of the untruncated total count
    (sum of n_sentences geometric counts), + 4."""
    mean = n_sentences * rate / (1.0 - rate)
    sd = math.sqrt(n_sentences * rate) / (1.0 - rate)
    return math.ceil(mean + 8.0 * sd + 4.0)


def _possible(tpl: Template) -> jax.Array:
    """bool[97]: the slot is in `all_param`."""
    return jnp.concatenate([inst_possible(tpl.d, tpl.l_D), abs_valid(tpl.d, tpl.l_D),
                            jnp.zeros(1, jnp.bool_)])


def column_slots(tpl: Template) -> jax.Array:
    """int32[72]: the parameter slot of each `all_param` column (the column order of
    `probe_arrays`; RNG past the problem's parameters, never a candidate)."""
    possible = _possible(tpl)
    col = jnp.where(possible, jnp.cumsum(possible) - 1, N_ALL)
    return jnp.full(N_ALL + 1, RNG, jnp.int32).at[col].set(jnp.arange(NP))[:N_ALL]


def candidate_masks(tpl: Template, kind: str) -> jax.Array:
    """bool[S, 72]: the legal wrong parameters (`all_param` columns) before each solution
    sentence (module docstring); rows past the solution are empty.

    The labels of `probe_arrays` (known, can_next, nece, exists) without its [S, 97, 97]
    reduction: a parameter becomes computable at row `ready` = 1 + the latest solution position
    of its direct dependencies in `whole_template` (0 without any; never if one is not in the
    solution), so can_next[r] = not known[r] and ready <= r. Tested against the host labels."""
    S = tpl.topo_S.shape[0]
    possible = _possible(tpl)
    pos = jnp.full(NP + 1, S + 1, jnp.int32).at[jnp.where(tpl.topo_S >= 0, tpl.topo_S, NP)].set(
        jnp.arange(S))[:NP]  # solution position of each slot, S + 1 = never
    deps = jnp.concatenate([jnp.pad(tpl.ideps_48x4, ((0, 0), (0, 4)), constant_values=-1),
                            struct_preds(tpl.G_3x4x4), jnp.full((1, 8), -1, jnp.int32)])
    real = (deps >= 0) & (deps != RNG) & possible[jnp.clip(deps, 0, NP - 1)]
    ready = jnp.max(jnp.where(real, pos[jnp.clip(deps, 0, NP - 1)] + 1, 0), axis=1)  # [97]
    r = jnp.arange(S)[:, None]
    new = (pos[None, :] >= r) & (r < tpl.n_sol)  # not defined before sentence r
    if kind == "retry":
        cand = new & possible[None, :] & (ready[None, :] > r)
    elif kind == "retry_weak":
        cand = new & (pos < S)[None, :]
    elif kind == "retry_miss":
        exists = possible & jnp.concatenate([tpl.tmpl_P[:NI], jnp.ones(NP - NI, jnp.bool_)])
        cand = new & exists[None, :]
    else:
        raise ValueError(f"retry: unknown kind {kind!r} ({', '.join(RETRY_KINDS[1:])})")
    return cand[:, column_slots(tpl)]


def ordered_picks(keys_SxC: jax.Array, r_N: jax.Array, rank_N: jax.Array) -> jax.Array:
    """int32[N]: the column of the rank_N[j]-th smallest key of row r_N[j] (rows in
    non-decreasing order, ranks 0, 1, ... within a row). Two exact ways, chosen by the static N
    (same result): a loop over the N picks, each the smallest key not yet taken in its row
    (cheap for few picks), or the rank of every key of every row (`rand.sort_order`: a fixed
    cost, cheaper beyond ~24 picks on XLA:CPU)."""
    if r_N.shape[0] > SCAN_PICKS:
        order = rand.sort_order(keys_SxC)
        return order[r_N, jnp.clip(rank_N, 0, keys_SxC.shape[1] - 1)]
    cols = jnp.arange(keys_SxC.shape[1])

    def pick(taken, x):
        keys_j, first = x
        taken = jnp.where(first, False, taken)
        col = jnp.argmin(jnp.where(taken, 3.0, keys_j))
        return taken | (cols == col), col

    _, col = jax.lax.scan(pick, jnp.zeros(cols.shape, jnp.bool_), (keys_SxC[r_N], rank_N == 0))
    return col


def draw_backs(seed: jax.Array, tpl: Template, kind: str, rate: float, n_slots: int) -> Backs:
    """The BACK sentences of one row from its render seed (streams RETRY_COUNT, RETRY_PICK)."""
    cand = candidate_masks(tpl, kind)
    S = cand.shape[0]
    n_cand = jnp.sum(cand, axis=1).astype(jnp.int32)
    u = rand.uniform(seed, streams.RETRY_COUNT, 0, S)
    geo = jnp.floor(jnp.log1p(-u) / math.log(rate)).astype(jnp.int32)  # P(geo >= k) = rate^k
    count = jnp.minimum(geo, n_cand)
    ends = jnp.cumsum(count)
    j = jnp.arange(n_slots)
    r = jnp.minimum(jnp.sum(ends[None, :] <= j[:, None], axis=1), S - 1)  # sentence of slot j
    used = j < ends[-1]
    rank = j - (ends[r] - count[r])  # the rank-th pick before sentence r
    keys = rand.uniform(seed, streams.RETRY_PICK, 0, S * N_ALL).reshape(S, N_ALL)
    col = ordered_picks(jnp.where(cand, keys, 2.0), r, rank)
    slot = column_slots(tpl)[col]
    return Backs(jnp.where(used, slot, -1), jnp.where(used, r, S), count, n_cand,
                 ends[-1] > n_slots)
