"""Judge solutions: add correct, shortest, first_error, ... to each JSONL line.

    python -m physics_lm.data.igsm judge --in solutions.jsonl --out verdicts.jsonl

Each input line is an object with ``problem`` and ``solution`` (and optionally ``answer``) texts;
the output line is the input line plus the judge's verdict (`text.judge.Verdict.to_dict`). Host
only: no JAX. `map_lines` is the loop of the `tokenize` and `labels` commands too.
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


def parse_line(n: int, line: str) -> dict:
    """The line's JSON object; a line that is not JSON is a ValueError naming it."""
    try:
        return json.loads(line)
    except json.JSONDecodeError as e:
        raise ValueError(f"line {n}: not JSON ({e})") from None


def _extended(line: str, rec: dict, fields: dict) -> str:
    """The input line with `fields` added: spliced into its text (the record is not encoded
    again: most of a judge line is the problem text), re-encoded where a key would repeat."""
    body = line.rstrip()
    if not isinstance(rec, dict) or not rec or not body.endswith("}") or not fields or any(
            k in rec for k in fields):
        return json.dumps({**rec, **fields}, ensure_ascii=False)
    return f"{body[:-1]}, {json.dumps(fields, ensure_ascii=False)[1:]}"


def map_lines(inp: str, out: str, fn: Callable[[int, dict], dict], add: bool = False) -> int:
    """Writes `fn(line number, object)` for every JSONL line of `inp` to `out`; returns the count.

    The loop of every igsm CLI command that turns records into records. `add=True`: `fn` returns
    only the fields to add to the input object (spliced into the line's text, `_extended`).
    """
    n = 0
    with open_text(inp, "r") as fin, open_text(out, "w") as fout:
        for line_no, line in enumerate(fin, 1):
            if not line.strip():
                continue
            rec = parse_line(line_no, line)
            got = fn(line_no, rec)
            fout.write((_extended(line, rec, got) if add else json.dumps(got, ensure_ascii=False))
                       + "\n")
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
        return v.to_dict()

    n = map_lines(args.inp, args.out, judged, add=True)
    dt = time.perf_counter() - start
    print(f"judge: {n} lines in {dt:.2f}s, {n_ok} correct ({n_ok / max(n, 1):.1%})",
          file=sys.stderr)
    return 0
