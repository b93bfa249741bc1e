"""Judge solutions: add correct, shortest, first_error, ... to each JSONL line.

    python -m physics_lm.data.igsm judge --in solutions.jsonl --out verdicts.jsonl [--workers N]

Each input line is an object with ``problem`` and ``solution`` (and optionally ``answer``) texts;
the output line is the input line plus the judge's verdict (`text.judge.Verdict.to_dict`). Host
only: no JAX. `map_lines` is the loop of the `tokenize` and `labels` commands too: blocks of lines
go to a pool of forked worker processes when the input is longer than one block.
"""

from __future__ import annotations

import argparse
import itertools
import json
import multiprocessing
import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import IO

# lines per task of the worker pool: big enough that a block's pickling is noise, small enough
# that two workers share a few thousand lines evenly
BLOCK = 256


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--in", dest="inp", required=True, help="input JSONL ('-' = stdin)")
    parser.add_argument("--out", required=True, help="output JSONL ('-' = stdout)")
    parser.add_argument("--workers", type=int, default=0,
                        help="worker processes (0: one per CPU core, at most 8; 1: no pool)")


def worker_count(requested: int) -> int:
    """`--workers`: 0 means one per usable core (at most 8); a negative count is a ValueError."""
    if requested < 0:
        raise ValueError(f"--workers={requested}: must be >= 0 (0 = one per core)")
    return requested or min(8, len(os.sched_getaffinity(0)))


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


Fn = Callable[[int, dict], dict]
_WORKER_FN: tuple[Fn, bool, Callable[[dict], bool] | None] | None = None  # set before the fork


def _blocks(lines: Iterable[str], size: int) -> Iterator[tuple[int, list[str]]]:
    """(number of the block's first line, its lines) for consecutive blocks of `size` lines."""
    it = iter(lines)
    first = 1
    while block := list(itertools.islice(it, size)):
        yield first, block
        first += len(block)


def _map_block(task: tuple[int, list[str]]) -> tuple[str, int, int]:
    """One block's output text, its record count and how many results `flag` marked."""
    assert _WORKER_FN is not None
    fn, add, flag = _WORKER_FN
    first, lines = task
    out, n, n_flagged = [], 0, 0
    for line_no, line in enumerate(lines, first):
        if not line.strip():
            continue
        rec = parse_line(line_no, line)
        got = fn(line_no, rec)
        out.append(_extended(line, rec, got) if add else json.dumps(got, ensure_ascii=False))
        n += 1
        n_flagged += bool(flag and flag(got))
    return "".join(o + "\n" for o in out), n, n_flagged


def map_lines(inp: str, out: str, fn: Fn, add: bool = False, workers: int = 1,
              flag: Callable[[dict], bool] | None = None) -> tuple[int, int]:
    """Writes `fn(line number, object)` for every JSONL line of `inp` to `out`, in input order.

    The loop of every igsm CLI command that turns records into records. `add=True`: `fn` returns
    only the fields to add to the input object (spliced into the line's text, `_extended`).
    `workers > 1` maps blocks of `BLOCK` lines in forked processes (each inherits `fn`, closures
    included; host-only commands, so no threads to fork) once the input holds a second block.
    Returns (records written, records whose result `flag` marks). A `ValueError` of `fn` in a
    worker reaches the caller as is, naming its line.
    """
    global _WORKER_FN
    _WORKER_FN = (fn, add, flag)
    n = n_flagged = 0
    with open_text(inp, "r") as fin, open_text(out, "w") as fout:
        blocks = _blocks(fin, BLOCK)
        head = list(itertools.islice(blocks, 2))
        pool = (multiprocessing.get_context("fork").Pool(workers)
                if workers > 1 and len(head) > 1 else None)
        try:
            tasks = itertools.chain(head, blocks)
            for text, k, f in (pool.imap(_map_block, tasks) if pool else map(_map_block, tasks)):
                fout.write(text)
                n, n_flagged = n + k, n_flagged + f
        finally:
            if pool:
                pool.terminate()
            _WORKER_FN = None
    return n, n_flagged


def run(args: argparse.Namespace) -> int:
    from physics_lm.data.igsm.text.judge import judge

    start, workers = time.perf_counter(), worker_count(args.workers)

    def judged(line_no: int, rec: dict) -> dict:
        if "problem" not in rec or "solution" not in rec:
            raise ValueError(f"line {line_no}: needs 'problem' and 'solution'")
        return judge(rec["problem"], rec["solution"], rec.get("answer")).to_dict()

    n, n_ok = map_lines(args.inp, args.out, judged, add=True, workers=workers,
                        flag=lambda v: v["correct"])
    dt = time.perf_counter() - start
    print(f"judge: {n} lines in {dt:.2f}s ({workers} worker{'s' * (workers > 1)}), {n_ok} correct"
          f" ({n_ok / max(n, 1):.1%})", file=sys.stderr)
    return 0
