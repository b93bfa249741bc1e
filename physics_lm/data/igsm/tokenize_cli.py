"""Tokenize texts: add problem_ids, solution_ids and the decoded text to each JSONL line.

    python -m physics_lm.data.igsm tokenize --in problems.jsonl --out tokens.jsonl

For each of ``problem``, ``solution`` and ``answer`` present in a line, adds ``<key>_ids`` (ids of
the shared vocabulary) and ``<key>_decoded`` (the ids decoded again: equal to the text when the
round trip is exact). A text the vocabulary cannot encode stops the run with its line. Host only:
no JAX.
"""

from __future__ import annotations

import argparse
import sys
import time

from physics_lm.data.igsm.judge_cli import add_arguments, map_lines, worker_count

__all__ = ["add_arguments", "run"]


def run(args: argparse.Namespace) -> int:
    from physics_lm.data.igsm.text.vocab import get_vocab

    start = time.perf_counter()
    vocab = get_vocab()

    def tokenized(line_no: int, rec: dict) -> dict:
        for key in ("problem", "solution", "answer"):
            if key in rec:
                try:
                    ids = vocab.encode(rec[key])
                    rec[f"{key}_ids"], rec[f"{key}_decoded"] = ids, vocab.decode(ids)
                except ValueError as e:
                    raise ValueError(f"line {line_no}, {key}: {e}") from None
        return rec

    n, _ = map_lines(args.inp, args.out, tokenized, workers=worker_count(args.workers))
    print(f"tokenize: {n} lines in {time.perf_counter() - start:.2f}s", file=sys.stderr)
    return 0
