"""Build and load the frozen sets, and hand the evaluators the rows they would have sampled.

`builder(name, data_dir)` accepts any `builder/config` name (`physics_lm.data.tfds.SetName`);
`build` writes it; `source` opens a built one (`tfds.data_source` underneath). The readers check
that the set belongs to the run (same grammar; same iGSM problem class and cell) and is large
enough, and raise a ConfigError naming `eval.dataset` otherwise: evaluating a model on another
task's problems would give numbers that look fine.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import numpy as np

from physics_lm.config import ConfigError
from physics_lm.data.tfds import BUILDERS, PREFIX, parse_name


def builder(name: str, data_dir: str | Path | None = None) -> Any:
    """The TFDS builder of `builder/config` (not necessarily built) in `data_dir`."""
    kind, parsed = parse_name(name)
    module, cls_name = BUILDERS[kind][0].split(":")
    cls = getattr(importlib.import_module(module), cls_name)
    return cls(config=parsed.config(cls.DEFAULT_N), data_dir=str(data_dir) if data_dir else None,
               file_format="array_record")


def build(name: str, data_dir: str | Path | None = None) -> Any:
    """Writes the set (deterministically; a built one is left as is) and returns its builder."""
    from physics_lm.data.tfds.base import prepare

    b = builder(name, data_dir)
    prepare(b)
    return b


def source(name: str, data_dir: str | Path | None = None) -> tuple[Any, dict[str, Any]]:
    """(builder, {split: random-access data source}) of a built set."""
    b = builder(name, data_dir)
    if not b.is_prepared():
        raise ConfigError(f"eval.dataset={PREFIX}{name}: not built in {b.data_dir}; build it with"
                          f" `python -m physics_lm.data.tfds build --name {name} --data_dir "
                          f"{data_dir or '<eval.data_dir>'}`")
    return b, b.as_data_source()


def _rows(name: str, data_dir: str, split: str, n: int) -> tuple[Any, list[dict[str, Any]]]:
    b, splits = source(name, data_dir)
    if split not in splits:
        raise ConfigError(f"eval.dataset={PREFIX}{name}: has no split {split!r} (it has "
                          f"{', '.join(splits)})")
    have = len(splits[split])
    if n > have:
        raise ConfigError(f"eval.dataset={PREFIX}{name}: {have} examples in {split!r}, but the "
                          f"eval asks for {n}; lower it or build a set with _n{n}")
    return b, splits[split].__getitems__(list(range(n)))


def igsm_cell(name: str, data_dir: str, task: Any, cell: str, n: int
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The first `n` problems of cell `cell` of the run's training task `task`:
    (tokens int32[n, T] padded, sol_pos int32[n], op int32[n]), as `cells.cell_batch` gives."""
    from physics_lm.data.igsm.text.vocab import get_vocab
    from physics_lm.data.tfds.igsm_cells import problem_class, split_name

    b, _ = source(name, data_dir)
    meta, mine = b.info.metadata, problem_class(task)
    if dict(meta["task"]) != {k: list(v) if isinstance(v, tuple) else v for k, v in mine.items()}:
        raise ConfigError(f"eval.dataset={PREFIX}{name}: built for the training task "
                          f"{dict(meta['task'])}, but this run's is {mine}")
    _, rows = _rows(name, data_dir, split_name(cell), n)
    T = max(len(r["tokens"]) for r in rows)
    tokens = np.full((n, T), get_vocab().pad_id, np.int32)
    for i, r in enumerate(rows):
        tokens[i, : len(r["tokens"])] = r["tokens"]
    labels = [r["labels"] for r in rows]
    return (tokens, np.array([x["sol_pos"] for x in labels], np.int32),
            np.array([x["op"] for x in labels], np.int32))


def cfg_strings(name: str, data_dir: str, grammar: str, split: str, n: int) -> list[list[int]]:
    """The first `n` strings of a split of a `cfg_eval_sets` set of `grammar`, as token lists."""
    b, _ = source(name, data_dir)
    if b.info.metadata["grammar"] != grammar:
        raise ConfigError(f"eval.dataset={PREFIX}{name}: strings of "
                          f"{b.info.metadata['grammar']}, but this run's grammar is {grammar}")
    _, rows = _rows(name, data_dir, split, n)
    return [r["tokens"].tolist() for r in rows]
