"""Concatenating variable-length fragments into a fixed-length row, with static shapes.

A row is described as a list of fragment ids (each a padded row of a table with its length);
`assemble` computes the end of every segment with a prefix sum; the segment holding output
position t is the number of segments that end at or before t (ends never decrease, and empty
segments are skipped because they end where they start), i.e. a prefix sum of a histogram of
the ends -- no search and no running max. Then it gathers the element. Used for token rows
(render.py) and for the byte string of the solution sketch (template_hash.py).

`prefix_sum` replaces `jnp.cumsum` for these ~1k-long rows: XLA:CPU lowers cumsum (and cummax)
to reduce-window trees that measured 7 us (cumsum) and 26 us (cummax) per 1,056-long row; a
two-level sum by triangular matmuls takes 1.7 us.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


class FragmentTable:
    """A padded table of fragments (token-id or byte rows) built once on the host."""

    def __init__(self, rows: list[list[int]]) -> None:
        width = max(1, max(len(r) for r in rows))
        table = np.zeros((len(rows), width), np.int32)
        for n, r in enumerate(rows):
            table[n, : len(r)] = r
        self.table = table
        self.lens = np.array([len(r) for r in rows], np.int32)


def prefix_sum(x: jax.Array, block: int = 32) -> jax.Array:
    """Inclusive cumsum of small non-negative int32 values along the last axis (exact while the
    totals stay below 2**24): cumsums inside blocks of `block`, plus the sums of earlier blocks,
    both as float32 matmuls with triangular ones (HIGHEST precision, so no TF32 rounding)."""
    n = x.shape[-1]
    nb = -(-n // block)
    pad = [(0, 0)] * (x.ndim - 1) + [(0, nb * block - n)]
    xb = jnp.pad(x, pad).astype(jnp.float32).reshape(*x.shape[:-1], nb, block)
    hi = jax.lax.Precision.HIGHEST
    within = jnp.matmul(xb, jnp.asarray(np.triu(np.ones((block, block), np.float32))),
                        precision=hi)
    before = jnp.matmul(within[..., -1], jnp.asarray(np.triu(np.ones((nb, nb), np.float32), 1)),
                        precision=hi)
    out = (within + before[..., None]).reshape(*x.shape[:-1], nb * block)[..., :n]
    return out.astype(jnp.int32)


def assemble(frag_N: jax.Array, ft: FragmentTable, out_len: int, fill: int = 0):
    """(row int32[out_len], total length, starts) for one row of fragment ids `frag_N`."""
    lens = jnp.asarray(ft.lens)[frag_N]
    ends = prefix_sum(lens)
    starts = ends - lens
    t = jnp.arange(out_len)
    n_ended = jnp.zeros(out_len, jnp.int32).at[ends].add(1, mode="drop")
    seg = jnp.minimum(prefix_sum(n_ended), frag_N.shape[0] - 1)
    w = ft.table.shape[1]
    val = jnp.asarray(ft.table)[frag_N[seg], jnp.clip(t - starts[seg], 0, w - 1)]
    total = ends[-1]
    return jnp.where(t < total, val, fill), total, starts
