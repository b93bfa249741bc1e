"""How far the test templates are from the training ones, by op (the template split, SPEC §14).

    python -m physics_lm.data.igsm sample ... --split train --out train.jsonl   # and --split test
    python -m physics_lm.data.igsm templates --train train.jsonl --test test.jsonl [--json out.json]

Test problems never share a solution template with training ones, but how novel a test template
is depends on the op range: at small ops a handful of templates is a whole class of problems
(with max_op 4 every op = 1 test problem asks about an abstract parameter of an item that has
none, "Define Inter as a. so a = 0.", a solution no training problem ends with). Per op this
prints the problems and distinct templates of each split and, for the test problems, the share
whose every step ("Define ... as x. so x = ...", symbols dropped) occurs in some training
solution ("steps seen"), whose every two consecutive steps occur so in one ("step pairs seen"),
and whose last step also ends some training solution ("last step seen"): where these are low,
test accuracy asks for composition the training data never shows. Host only: no JAX. Each line
needs `solution` and `op` (the sample CLI writes both).
"""

from __future__ import annotations

import argparse
import itertools
import json
import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator
from typing import Any

from physics_lm.data.igsm.judge_cli import open_text, parse_line
from physics_lm.data.igsm.text.sketch import host_bin, sketch_text

TRAIN_BINS = range(16)  # const/params.py: train_bin 0-15, test_bin 16-22
_SYMBOL = re.compile(r"\b[a-zA-Z]\b")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--train", required=True, help="problems of the training bins (JSONL)")
    parser.add_argument("--test", required=True, help="problems of the test bins (JSONL)")
    parser.add_argument("--json", default=None, help="also write the table as JSON here")
    parser.add_argument("--top", type=int, default=3, help="most common test templates per op")


def steps(sketch: str) -> tuple[str, ...]:
    """The steps of a sketch, symbols dropped: ("Define Inter as x. so x = 0", ...)."""
    out: list[list[str]] = []
    for part in (p.strip().rstrip(".") for p in sketch.split(". ")):
        if part.startswith("Define ") or not out:  # a step may hold an intermediate line
            out.append([])
        out[-1].append(_SYMBOL.sub("x", part))
    return tuple(". ".join(step) for step in out)


def _pairs(s: tuple[str, ...]) -> set[tuple[str, str]]:
    return set(itertools.pairwise(s))


def _records(path: str, split: str) -> Iterator[tuple[int, str]]:
    """(op, sketch) of every line; a line without a solution or op, or in the other split's
    bins, is an error naming it."""
    with open_text(path, "r") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            rec = parse_line(n, line)
            if not isinstance(rec, dict) or "solution" not in rec or "op" not in rec:
                raise ValueError(f"{path} line {n}: needs 'solution' and 'op' (the sample CLI "
                                 "writes both)")
            sk = sketch_text(rec["solution"])
            if ((b := host_bin(sk)) in TRAIN_BINS) != (split == "train"):
                raise ValueError(f"{path} line {n}: template bin {b} is not a "
                                 f"{split} bin (train: 0-15, test: 16-22)")
            yield int(rec["op"]), sk


def coverage(train: Iterable[tuple[int, str]], test: Iterable[tuple[int, str]],
             top: int = 3) -> list[dict[str, Any]]:
    """One row per op (module docstring) from (op, sketch) pairs of each split."""
    train, test = list(train), list(test)
    seen_steps = {s for _, sk in train for s in steps(sk)}
    seen_pairs = {p for _, sk in train for p in _pairs(steps(sk))}
    seen_last = {steps(sk)[-1] for _, sk in train}
    train_by_op, test_by_op = defaultdict(Counter), defaultdict(Counter)
    for op, sk in train:
        train_by_op[op][sk] += 1
    for op, sk in test:
        test_by_op[op][sk] += 1
    rows = []
    for op in sorted(set(train_by_op) | set(test_by_op)):
        tr, te = train_by_op[op], test_by_op[op]
        n_te = sum(te.values())
        all_seen = sum(c for sk, c in te.items() if set(steps(sk)) <= seen_steps)
        pairs_seen = sum(c for sk, c in te.items() if _pairs(steps(sk)) <= seen_pairs)
        last_seen = sum(c for sk, c in te.items() if steps(sk)[-1] in seen_last)
        rows.append(dict(
            op=op, train_problems=sum(tr.values()), train_templates=len(tr),
            test_problems=n_te, test_templates=len(te),
            steps_seen=all_seen / n_te if n_te else None,
            step_pairs_seen=pairs_seen / n_te if n_te else None,
            last_step_seen=last_seen / n_te if n_te else None,
            top_test=[[sk.strip(), c] for sk, c in te.most_common(top)]))
    return rows


def _fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:.3f}"


def run(args: argparse.Namespace) -> int:
    rows = coverage(_records(args.train, "train"), _records(args.test, "test"), args.top)
    print("| op | train problems | train templates | test problems | test templates | "
          "steps seen | step pairs seen | last step seen |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['op']} | {r['train_problems']} | {r['train_templates']} | "
              f"{r['test_problems']} | {r['test_templates']} | {_fmt(r['steps_seen'])} | "
              f"{_fmt(r['step_pairs_seen'])} | "
              f"{_fmt(r['last_step_seen'])} |")
    for r in rows:
        for sk, c in r["top_test"]:
            print(f"op {r['op']} test x{c}: {sk}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    return 0
