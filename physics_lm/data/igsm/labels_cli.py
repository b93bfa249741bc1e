"""Print the V-probing labels of given problems by parameter name (Part 2.1, SPEC §15).

    python -m physics_lm.data.igsm labels --in problems.jsonl --out labels.jsonl

Each input line has ``problem`` (the text, question included) and optionally ``solution`` (the
reference solution's order is used when it is absent). Each output line is one object:
  params     every parameter's name as the text writes it ("Bread's Beef Steak"): the columns
  exists     0/1 per column: 0 for instance pairs that are not structure edges
  nece       0/1 per column: the parameter is needed for the question
  dep        [A, B] name pairs with dep(A, B) = 1 (A depends on B, transitively)
  rows       one object per solution row: row 0 before the first sentence, then one after each
             solution sentence (up to the first wrong one), with `after` (the parameter that
             sentence defined, null for row 0) and `known`, `value` (0-22, 23 = unknown),
             `can_next`, `nece_next` lists aligned with `params`
  truncated  the given solution went on past its last labelled (correct) sentence
Host only: no JAX. A line whose problem does not parse is an error naming the line.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from physics_lm.data.igsm.judge_cli import add_arguments, map_lines, worker_count

__all__ = ["add_arguments", "labels_of", "run"]


def labels_of(problem_text: str, solution: str | None = None) -> dict[str, Any]:
    """The labels object of one problem (module docstring)."""
    from physics_lm.data.igsm.text.parser import parse_problem
    from physics_lm.data.igsm.text.probe_labels import ROW_KEYS, pair_labels, row_labels

    problem = parse_problem(problem_text)
    order = solution if solution is not None else _shortest_order(problem)
    rows = row_labels(problem, order)
    names = [problem.name(p) for p in problem.all_param]
    dep = pair_labels(problem)["dep"]
    out_rows = []
    for r in range(rows.known.shape[0]):
        row: dict[str, Any] = {"after": names[problem.param_index[rows.defined[r - 1]]]
                               if r else None}
        row.update({k: getattr(rows, k)[r].tolist() for k in ROW_KEYS if k != "nece"})
        out_rows.append(row)
    return {"params": names, "exists": rows.exists.astype(int).tolist(),
            "nece": rows.nece[0].tolist(),
            "dep": [[names[a], names[b]] for a, b in zip(*dep.nonzero(), strict=True)],
            "rows": out_rows, "truncated": bool(rows.truncated)}


def _shortest_order(problem) -> list:
    """A shortest solution's order: the necessary parameters in a topological order."""
    from graphlib import TopologicalSorter

    from physics_lm.data.igsm.text.parser import RNG

    graph = {p: [d for d in problem.deps[p] if d != RNG] for p in problem.necessary}
    return list(TopologicalSorter(graph).static_order())


def run(args: argparse.Namespace) -> int:
    from physics_lm.data.igsm.text.parser import ProblemParseError

    def labelled(line_no: int, rec: dict) -> dict:
        if not isinstance(rec.get("problem"), str):
            raise ValueError(f"line {line_no}: needs a 'problem' text")
        try:
            return labels_of(rec["problem"], rec.get("solution"))
        except ProblemParseError as e:
            raise ValueError(f"line {line_no}: the problem does not parse ({e})") from None

    n, _ = map_lines(args.inp, args.out, labelled, workers=worker_count(args.workers))
    print(f"labels: {n} problems", file=sys.stderr)
    return 0
