"""Packing a stream of rendered problems into rows of one context (Part 2.2's token budgets).

The papers compare retry rates at the same number of training *tokens*: problems are written one
after another into the context, a problem that does not fit in what is left of the row is dropped
(never cut), and attention is not reset between problems. Here: the stream is the N problems of
one sampler call, in row order; row 0 takes problems 0, 1, ... while they fit, the first that
does not fit is dropped and row 1 starts with the next one, and so on. Problems longer than the
context never fit and are skipped without ending a row. Everything is a pure function of the
stream (no host loop, static shapes):

  * tokens before problem i: an exclusive prefix sum Cx of the lengths; a row that starts at
    problem i ends before e_i = the first j with C_j > Cx_i + T (a binary search), and the next
    row starts at e_i + 1;
  * the start of row b is next^b(0), for every b at once by pointer doubling (log2 B gathers);
  * row b's token t is stream position Cx[start_b] + t, found in its problem by a binary search.

Rows whose stream ran out (`exhausted`: their last problem was the stream's last) may hold fewer
problems than the context allows; the caller draws enough problems that this is rare and reports
it.
"""

from __future__ import annotations

from collections.abc import Mapping

import jax
import jax.numpy as jnp


def pack_rows(length_N: jax.Array, usable_N: jax.Array, arrays: Mapping[str, jax.Array],
              fill: Mapping[str, int], sums: Mapping[str, jax.Array], n_rows: int,
              T: int) -> tuple[dict[str, jax.Array], dict[str, jax.Array]]:
    """Packs N problems (`arrays[k]`: [N, >= T], a problem's data at its own positions) into
    `n_rows` rows of T positions.

    Returns (packed: each array as [n_rows, T], `fill[k]` outside the problems;
    info: n_problems, length (positions used), exhausted, and every `sums[k]` ([N]) summed over
    each row's problems, all [n_rows])."""
    N = length_N.shape[0]
    lengths = jnp.where(usable_N & (length_N <= T), length_N, 0).astype(jnp.int32)
    ends_N = jnp.cumsum(lengths)
    before = jnp.concatenate([jnp.zeros(1, jnp.int32), ends_N])  # [N+1] tokens before problem i
    stop = jnp.searchsorted(ends_N, before + T, side="right").astype(jnp.int32)  # [N+1]
    nxt = jnp.minimum(stop + 1, N)  # problem stop[i] is dropped; the next row starts after it
    b = jnp.arange(n_rows)
    start = jnp.zeros(n_rows, jnp.int32)
    jump = nxt
    for k in range(max(1, (n_rows - 1).bit_length())):
        start = jnp.where((b >> k) & 1, jump[start], start)
        jump = jump[jump]
    stop_b = stop[start]
    used = before[stop_b] - before[start]
    q = before[start][:, None] + jnp.arange(T)[None, :]  # stream position of each row token
    inside = jnp.arange(T)[None, :] < used[:, None]
    prob = jnp.minimum(jnp.searchsorted(ends_N, q, side="right"), N - 1)
    off = jnp.clip(q - before[prob], 0, T - 1)
    packed = {k: jnp.where(inside, a[prob, off], jnp.asarray(fill[k], a.dtype))
              for k, a in arrays.items()}

    def row_sum(x_N):
        acc = jnp.concatenate([jnp.zeros(1, x_N.dtype), jnp.cumsum(x_N)])
        return acc[stop_b] - acc[start]

    info = {"n_problems": row_sum((lengths > 0).astype(jnp.int32)), "length": used,
            "exhausted": stop_b >= N}
    info.update({k: row_sum(jnp.where(lengths > 0, v, 0)) for k, v in sums.items()})
    return packed, info
