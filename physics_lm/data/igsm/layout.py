"""Concatenating variable-length fragments into a fixed-length row, with static shapes.

A row is described as a list of fragment ids (each a padded row of a table with its length);
`assemble` computes the start of every segment with a cumsum and, for every output position,
finds its segment by binary search and gathers the element. Used for token rows (render.py) and
for the byte string of the solution sketch (template_hash.py).
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
    t = jnp.arange(out_len)
    seg = jnp.clip(jnp.searchsorted(ends, t, side="right"), 0, frag_N.shape[0] - 1)
    start = ends[seg] - lens[seg]
    w = ft.table.shape[1]
    val = jnp.asarray(ft.table)[frag_N[seg], jnp.clip(t - start, 0, w - 1)]
    total = ends[-1]
    return jnp.where(t < total, val, fill), total, ends - lens
