"""Frozen evaluation sets as TFDS datasets (array_record files, no TensorFlow): README.md here.

The sets are *exports* of the on-device samplers (DESIGN.md), built from fixed seeds; an eval mode
reads one instead of sampling with `eval.dataset=tfds:<builder>/<config>` (`eval.data_dir`: where
it was built; "" = TFDS's default). This module holds only the names, so the config boundary can
validate a setting without importing TFDS or JAX:

  base.py        configs parsed from their names (`SetName`) and byte-identical builds
  igsm_cells.py  `igsm_eval_cells`: the Part 2.1 cells of a training task, one split per cell
  cfg_sets.py    `cfg_eval_sets`: true strings of a grammar with NT labels and CYK verdicts
  read.py        build / load a set, and the rows the evaluators read from it
  __main__.py    `python -m physics_lm.data.tfds build|list ...`
"""

from __future__ import annotations

import dataclasses
import re

# builder name -> ("module:Class", the task family whose `eval` mode reads it)
BUILDERS: dict[str, tuple[str, str]] = {
    "igsm_eval_cells": ("physics_lm.data.tfds.igsm_cells:IgsmEvalCells", "igsm"),
    "cfg_eval_sets": ("physics_lm.data.tfds.cfg_sets:CfgEvalSets", "cfg"),
}
IGSM_BASES = ("med_pq", "med_qp", "hard_pq", "hard_qp", "smoke_pq", "scaled_pq")
PREFIX = "tfds:"
_NAME = re.compile(r"^(?P<base>[a-z0-9_]+?)(?:_n(?P<n>\d+))?(?:_s(?P<seed>\d+))?"
                   r"(?:\.(?P<splits>\w+(?:\+\w+)*))?$")


@dataclasses.dataclass(frozen=True)
class SetName:
    """A parsed config name `<base>[_n<N>][_s<SEED>][.<split>+<split>...]`.

    n=None is the builder's default size (4,096); `splits` (iGSM only) keeps a subset of the
    cells, e.g. `smoke_pq_n6_s0.op_le_3+op_8`: tests build two cells, not seven.
    """

    base: str
    n: int | None = None
    seed: int = 0
    splits: tuple[str, ...] = ()

    def config(self, default_n: int) -> str:
        """The canonical config name (the default size and seed 0 are left out)."""
        n = default_n if self.n is None else self.n
        name = self.base if (n, self.seed) == (default_n, 0) else f"{self.base}_n{n}_s{self.seed}"
        return name + (f".{'+'.join(self.splits)}" if self.splits else "")


def bases(builder: str) -> tuple[str, ...]:
    """The config bases of a builder (iGSM training classes x format, or grammar names)."""
    if builder == "cfg_eval_sets":
        from physics_lm.data.cfg.grammar import grammar_names

        return tuple(grammar_names())
    return IGSM_BASES


def parse_config(builder: str, config: str) -> SetName | None:
    """The parsed config name of `builder`, or None if it is not one."""
    m = _NAME.match(config)
    if m is None or m["base"] not in bases(builder) or (m["n"] and int(m["n"]) < 1):
        return None
    if m["splits"] and builder == "cfg_eval_sets":
        return None
    splits = tuple(m["splits"].split("+")) if m["splits"] else ()
    return SetName(m["base"], int(m["n"]) if m["n"] else None, int(m["seed"] or 0), splits)


def parse_name(name: str) -> tuple[str, SetName]:
    """`builder/config` -> (builder, parsed config); ValueError naming what is wrong."""
    builder, _, config = name.partition("/")
    if builder not in BUILDERS:
        raise ValueError(f"unknown builder {builder!r}; known: {', '.join(BUILDERS)}")
    parsed = parse_config(builder, config)
    if parsed is None:
        raise ValueError(f"{builder}: config {config!r} is not <base>[_n<N>][_s<SEED>]"
                         f"{'[.<split>+...]' if builder == 'igsm_eval_cells' else ''} with base "
                         f"one of {', '.join(bases(builder))}")
    return builder, parsed
