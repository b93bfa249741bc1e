"""Concatenating variable-length fragments into a fixed-length row, with static shapes.

A row is described as a list of fragment ids (each a padded row of a table with its length);
`assemble` computes the start of every segment with a cumsum, marks each non-empty segment's
index at its start position (one scatter; starts of non-empty segments are distinct) and carries
it forward with a running max, so every output position knows its segment without a binary
search (2x faster on CPU than `searchsorted`), then gathers the element. Used for token rows
(render.py) and for the byte string of the solution sketch (template_hash.py).
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


def assemble(frag_N: jax.Array, ft: FragmentTable, out_len: int, fill: int = 0):
    """(row int32[out_len], total length) for one row of fragment ids `frag_N`."""
    lens = jnp.asarray(ft.lens)[frag_N]
    ends = jnp.cumsum(lens)
    starts = ends - lens
    t = jnp.arange(out_len)
    at = jnp.where((lens > 0) & (starts < out_len), starts, out_len)
    seg = jnp.zeros(out_len, jnp.int32).at[at].max(
        jnp.arange(frag_N.shape[0], dtype=jnp.int32), mode="drop")
    seg = jax.lax.cummax(seg)
    w = ft.table.shape[1]
    val = jnp.asarray(ft.table)[frag_N[seg], jnp.clip(t - starts[seg], 0, w - 1)]
    total = ends[-1]
    return jnp.where(t < total, val, fill), total, starts
