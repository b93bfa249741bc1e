"""Judge solutions: add correct, shortest, first_error, ... to each JSONL line.

    python -m physics_lm.data.igsm judge --in solutions.jsonl --out verdicts.jsonl

Each input line is an object with ``problem`` and ``solution`` (and optionally ``answer``) texts;
the output line is the input line plus the judge's verdict (`text.judge.Verdict.to_dict`). Host
only: no JAX. `open_text` and `json_lines` are shared with the `tokenize` command.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import IO


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--in", dest="inp", required=True, help="input JSONL ('-' = stdin)")
    parser.add_argument("--out", required=True, help="output JSONL ('-' = stdout)")


@contextmanager
def open_text(path: str, mode: str) -> Iterator[IO[str]]:
    """The file at `path` ("-": stdin when reading, stdout when writing), closed afterwards."""
    if path == "-":
        yield sys.stdin if "r" in mode else sys.stdout
    else:
        with open(path, mode, encoding="utf-8") as f:
            yield f


def json_lines(f: IO[str]) -> Iterator[tuple[int, dict]]:
    """(line number, object) of every non-blank line; a line that is not JSON is a ValueError."""
    for n, line in enumerate(f, 1):
        if line.strip():
            try:
                yield n, json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"line {n}: not JSON ({e})") from None


def map_lines(inp: str, out: str, fn: Callable[[int, dict], dict]) -> int:
    """Writes `fn(line number, object)` for every JSONL line of `inp` to `out`; returns the count.

    The loop of every igsm CLI command that turns records into records.
    """
    n = 0
    with open_text(inp, "r") as fin, open_text(out, "w") as fout:
        for line_no, rec in json_lines(fin):
            fout.write(json.dumps(fn(line_no, rec), ensure_ascii=False) + "\n")
            n += 1
    return n


def run(args: argparse.Namespace) -> int:
    from physics_lm.data.igsm.text.judge import judge

    start, n_ok = time.perf_counter(), 0

    def judged(line_no: int, rec: dict) -> dict:
        nonlocal n_ok
        if "problem" not in rec or "solution" not in rec:
            raise ValueError(f"line {line_no}: needs 'problem' and 'solution'")
        v = judge(rec["problem"], rec["solution"], rec.get("answer"))
        n_ok += v.correct
        return {**rec, **v.to_dict()}

    n = map_lines(args.inp, args.out, judged)
    dt = time.perf_counter() - start
    print(f"judge: {n} lines in {dt:.2f}s, {n_ok} correct ({n_ok / max(n, 1):.1%})",
          file=sys.stderr)
    return 0
