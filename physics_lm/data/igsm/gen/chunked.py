"""Running a vmapped function in chunks of rows grouped by their loop lengths."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp


def by_work(fn: Callable[[Any], Any], xs: Any, rows: int, work: jax.Array) -> Any:
    """fn (vmapped over the leading axis) in sequential chunks of `rows` rows sorted by `work`;
    the same result as fn(xs).

    Why: a vmapped while_loop runs as long as its slowest row, so grouping rows of similar loop
    lengths shortens most chunks' loops; on CPUs a chunk's working set also stays in cache.
    """
    n_rows = work.shape[0]
    if rows >= n_rows or n_rows % rows:
        return fn(xs)
    n = n_rows // rows
    order = jnp.argsort(work, stable=True)
    xs = jax.tree.map(lambda x: x[order].reshape(n, rows, *x.shape[1:]), xs)
    out = jax.lax.map(fn, xs)
    inv = jnp.zeros(n_rows, jnp.int32).at[order].set(jnp.arange(n_rows, dtype=jnp.int32))
    return jax.tree.map(lambda x: x.reshape(n_rows, *x.shape[2:])[inv], out)
