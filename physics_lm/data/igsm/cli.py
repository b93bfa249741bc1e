"""Command line of ``python -m physics_lm.data.igsm``: a registry of subcommands.

Each subcommand is a :class:`Command` naming the module that implements it, so that running
``judge`` never imports the (JAX) sampler and vice versa. Another module adds its own subcommand
with one entry in :data:`COMMANDS` (or :func:`register` at import time of this module's users),
e.g. ``"sample": Command("sample problems", "physics_lm.data.igsm.sample_cli")``; the module must
define ``add_arguments(name, parser)`` and ``run(name, args) -> int``.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import IO


@dataclass(frozen=True)
class Command:
    help: str
    module: str  # imported only when the command runs


COMMANDS: dict[str, Command] = {
    "judge": Command(
        "judge solutions: add correct, shortest, first_error, ... to each line", __name__
    ),
    "sample": Command("sample iGSM problems on device (JAX)", "physics_lm.data.igsm.sample_cli"),
    "tokenize": Command(
        "add problem_ids, solution_ids and the decoded text to each line", __name__
    ),
}


def register(name: str, command: Command) -> None:
    """Adds a subcommand (refuses to replace an existing one)."""
    if name in COMMANDS:
        raise ValueError(f"subcommand {name!r} is already registered")
    COMMANDS[name] = command


def add_arguments(name: str, parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--in", dest="inp", required=True, help="input JSONL ('-' = stdin)")
    parser.add_argument("--out", required=True, help="output JSONL ('-' = stdout)")


@contextmanager
def _open(path: str, mode: str) -> Iterator[IO[str]]:
    if path == "-":
        yield sys.stdin if "r" in mode else sys.stdout
    else:
        with open(path, mode, encoding="utf-8") as f:
            yield f


def _lines(f: IO[str]) -> Iterator[tuple[int, dict]]:
    for n, line in enumerate(f, 1):
        if line.strip():
            try:
                yield n, json.loads(line)
            except json.JSONDecodeError as e:
                raise SystemExit(f"line {n}: not JSON ({e})") from None


def run(name: str, args: argparse.Namespace) -> int:
    from physics_lm.data.igsm.text.judge import judge
    from physics_lm.data.igsm.text.vocab import get_vocab

    start, n, n_ok = time.perf_counter(), 0, 0
    vocab = get_vocab()
    with _open(args.inp, "r") as fin, _open(args.out, "w") as fout:
        for line_no, rec in _lines(fin):
            if name == "judge":
                if "problem" not in rec or "solution" not in rec:
                    raise SystemExit(f"line {line_no}: needs 'problem' and 'solution'")
                v = judge(rec["problem"], rec["solution"], rec.get("answer"))
                rec = {**rec, **v.to_dict()}
                n_ok += v.correct
            else:
                try:
                    for key in ("problem", "solution", "answer"):
                        if key in rec:
                            ids = vocab.encode(rec[key])
                            rec[f"{key}_ids"] = ids
                            rec[f"{key}_decoded"] = vocab.decode(ids)
                except ValueError as e:
                    raise SystemExit(f"line {line_no}, {key}: {e}") from None
            fout.write(json.dumps(rec, ensure_ascii=False) + "\n")
            n += 1
    dt = time.perf_counter() - start
    summary = f"{name}: {n} lines in {dt:.2f}s"
    if name == "judge":
        summary += f", {n_ok} correct ({n_ok / max(n, 1):.1%})"
    print(summary, file=sys.stderr)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Parses ``argv`` and runs the chosen subcommand; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="python -m physics_lm.data.igsm")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    chosen = next((a for a in argv if not a.startswith("-")), None)
    for name, command in COMMANDS.items():
        p = sub.add_parser(name, help=command.help, description=command.help)
        if name == chosen:  # import only the module that will run
            importlib.import_module(command.module).add_arguments(name, p)
    args = parser.parse_args(argv)
    return importlib.import_module(COMMANDS[args.command].module).run(args.command, args)
