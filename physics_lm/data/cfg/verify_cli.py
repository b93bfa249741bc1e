"""Check membership of JSON-line token strings; copies each line and adds "member": true|false.

Input lines are objects with `tokens` (terminal ids, no BOS/EOS), e.g. samples_public.jsonl or
`sample` output. Any integer ids are accepted (ids outside the terminals -> not a member); a line
that is not a JSON object with an integer list `tokens` stops the run with the file and line.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from collections.abc import Iterator
from typing import TextIO

from physics_lm.data.cfg.grammar import load_grammar
from physics_lm.data.cfg.membership import check_strings


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--grammar", required=True, help="shipped grammar name (cfg3b..cfg3k)")
    parser.add_argument("--in", dest="inp", required=True, help="input .jsonl path ('-': stdin)")
    parser.add_argument("--out", default="-", help="output .jsonl path, '-' for stdout")
    parser.add_argument("--prefix-key", default=None,
                        help="optional integer field: that many leading tokens may be repaired "
                             "(corrupted-prefix scoring, SPEC §7)")


def read_token_lines(path: str, extra_int_key: str | None = None) -> Iterator[tuple[dict, int]]:
    """Yields (record, extra int or 0) per non-blank line; ValueError names file, line and value."""
    with contextlib.ExitStack() as stack:
        try:
            f = sys.stdin if path == "-" else stack.enter_context(open(path))
        except OSError as e:
            raise ValueError(f"--in={path!r}: {e.strerror}") from None
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            where = f"{path}:{lineno}"
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(
                    f"{where}: not valid JSON ({e.msg}): {line.strip()[:80]!r}") from None
            if not isinstance(rec, dict) or "tokens" not in rec:
                raise ValueError(f"{where}: no 'tokens' field in {line.strip()[:80]!r}")
            toks = rec["tokens"]
            if not isinstance(toks, list) or not all(
                isinstance(t, int) and not isinstance(t, bool) for t in toks
            ):
                raise ValueError(f"{where}: 'tokens' must be a list of integers, got "
                                 f"{json.dumps(toks)[:80]}")
            extra = 0
            if extra_int_key is not None:
                extra = rec.get(extra_int_key)
                if not isinstance(extra, int) or isinstance(extra, bool) or extra < 0:
                    raise ValueError(f"{where}: {extra_int_key!r} must be an integer >= 0, got "
                                     f"{extra!r}")
            yield rec, extra


@contextlib.contextmanager
def open_out(path: str) -> Iterator[TextIO]:
    """stdout for '-', else the file; an unwritable path is a ValueError (exit 2)."""
    if path == "-":
        yield sys.stdout
        return
    try:
        f = open(path, "w")  # noqa: SIM115 (closed below)
    except OSError as e:
        raise ValueError(f"--out={path!r}: {e.strerror}") from None
    with f:
        yield f


def run(args: argparse.Namespace) -> int:
    """Reads all lines first (so bad input fails before any work), checks in buckets, writes."""
    grammar = load_grammar(args.grammar)
    rows = list(read_token_lines(args.inp, args.prefix_key))
    wild = [extra for _, extra in rows] if args.prefix_key else None
    member = check_strings(grammar, [rec["tokens"] for rec, _ in rows],
                           wildcard_prefix_lens=wild)
    with open_out(args.out) as f:
        for (rec, _), m in zip(rows, member, strict=True):
            f.write(json.dumps({**rec, "member": bool(m)}, separators=(",", ":")) + "\n")
    return 0
