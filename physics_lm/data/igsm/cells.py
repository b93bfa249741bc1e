"""The evaluation cells of Part 2.1: which test sets a trained model is scored on.

For a training task with max op M (its preset's, or a custom one), in this fixed order:

  ``op<=M``   the training op distribution (the light law of `gen/hyper.py`)
  ``op=M``    the hardest training op
  ``op=k``    out of distribution, k in `IGSMTask.ood_ops`: med 20-23, hard 28-32 (the paper's),
              M+5..M+8 for a custom M
  ``reask``   a problem of the first OOD op asked about another of its parameters
              (`gen/reask.py`; the op varies)

e.g. med: op<=15, op=15, op=20, op=21, op=22, op=23, reask. Every cell draws from the *test*
template bins (the bins the training task does not use, `IGSMTask.heldout`), and its rows are
long enough for its problems (`IGSMTask.min_seq_len`). The problem class of the training task
(preset, max_op, max_edge, fmt, train_bins) carries over; the batch-shaping settings that would
change which problems are drawn (`groups`, `pool`) are reset, so a cell's batch depends only on
the cell, the eval seed and the number of rows. So are the Part 2.2 training-data options (retry
data, packing): a cell is one plain problem per row, its prompt the problem.

Two diagnostic cells, not among the paper's and asked for by name, draw fresh problems from the
*training* template bins: ``seen:op<=M`` and ``seen:op=M``. At CPU scale (small M) few solution
templates exist and whole op-levels fall in one bin (custom M=4: every op=1 test problem asks about
an abstract parameter of a childless item, every op=1 training problem about an instance one), so
comparing a cell with its ``seen:`` twin separates "has not learned the skill" from "has not
generalised beyond the training templates".

A cell is a pure function of (eval seed, cell): `cell_key(seed, name)` folds a fixed hash of
the cell's name into `PRNGKey(seed)`, so every model evaluated with the same seed sees the same
problems, and two cells never share a key. The evaluator calls `cell.sample(cell_key(seed,
name), n)` (or `cell_batch`) and reads per row `labels["sol_pos"]` (the <solution> token: the
prompt is tokens[:sol_pos + 1]), `op`, `question_kind` (0 instance, 1 abstract), `answer`,
`valid` and `overflow`.
"""

from __future__ import annotations

import dataclasses
import functools
import zlib

import jax

from physics_lm.data.batch import Batch
from physics_lm.data.igsm.task import IGSMTask

REASK = "reask"
SEEN = "seen:"  # prefix of the cells drawn from the training template bins
_ANY_LEN = 1 << 16  # a seq_len long enough to construct a cell before sizing it


def _sized(task: IGSMTask, seq_len: int) -> IGSMTask:
    """`task` with rows of at least `seq_len` and of its own `min_seq_len`."""
    task = dataclasses.replace(task, seq_len=_ANY_LEN)
    return dataclasses.replace(task, seq_len=max(seq_len, task.min_seq_len))


def eval_cells(task: IGSMTask, seen: bool = False) -> dict[str, IGSMTask]:
    """The cells of a training task, by name, in the order of the module docstring; with `seen`
    also the two diagnostic cells of its training template bins."""
    top = task.resolved_max_op
    base = dataclasses.replace(task, split="test", op=None, reask=False, groups=1, pool=0,
                               seq_len=_ANY_LEN, retry="none", retry_rate=0.0, retry_mask="none",
                               packing="single")
    cells = {f"op<={top}": base, f"op={top}": dataclasses.replace(base, op=top)}
    for k in base.ood_ops:
        cells[f"op={k}"] = dataclasses.replace(base, op=k)
    cells[REASK] = dataclasses.replace(base, op=base.ood_ops[0], reask=True)
    if seen:
        for name in (f"op<={top}", f"op={top}"):
            cells[SEEN + name] = dataclasses.replace(cells[name], split=task.split)
    return {name: _sized(cell, task.seq_len) for name, cell in cells.items()}


def cell_key(seed: int, name: str) -> jax.Array:
    """The key of cell `name` under eval seed `seed`: fold_in(PRNGKey(seed), crc32(name))."""
    return jax.random.fold_in(jax.random.PRNGKey(seed), zlib.crc32(name.encode()) & 0x7FFFFFFF)


@functools.lru_cache(maxsize=32)
def _compiled(cell: IGSMTask, n: int, options: tuple[tuple[str, object], ...]):
    key = jax.random.PRNGKey(0)
    return jax.jit(lambda k: cell.sample(k, n)).lower(key).compile(dict(options) or None)


def cell_batch(task: IGSMTask, seed: int, name: str, n: int,
               compiler_options: dict | None = None) -> Batch:
    """`n` problems of cell `name` of the training task `task` under eval seed `seed` (the
    compiled sampler is cached per cell and n)."""
    cells = eval_cells(task, seen=True)
    if name not in cells:
        raise ValueError(f"cell: unknown name {name!r} (one of {', '.join(cells)})")
    options = tuple(sorted((compiler_options or {}).items()))
    return _compiled(cells[name], n, options)(cell_key(seed, name))
