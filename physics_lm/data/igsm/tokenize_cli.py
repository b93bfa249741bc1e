"""Tokenize texts: add problem_ids, solution_ids and the decoded text to each JSONL line.

    python -m physics_lm.data.igsm tokenize --in problems.jsonl --out tokens.jsonl

For each of ``problem``, ``solution`` and ``answer`` present in a line, adds ``<key>_ids`` (ids of
the shared vocabulary) and ``<key>_decoded`` (the ids decoded again: equal to the text when the
round trip is exact). A text the vocabulary cannot encode stops the run with its line. Host only:
no JAX.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from physics_lm.data.igsm.judge_cli import add_arguments, json_lines, open_text

__all__ = ["add_arguments", "run"]


def run(args: argparse.Namespace) -> int:
    from physics_lm.data.igsm.text.vocab import get_vocab

    start, n = time.perf_counter(), 0
    vocab = get_vocab()
    with open_text(args.inp, "r") as fin, open_text(args.out, "w") as fout:
        for line_no, rec in json_lines(fin):
            for key in ("problem", "solution", "answer"):
                if key in rec:
                    try:
                        ids = vocab.encode(rec[key])
                        rec[f"{key}_ids"], rec[f"{key}_decoded"] = ids, vocab.decode(ids)
                    except ValueError as e:
                        raise ValueError(f"line {line_no}, {key}: {e}") from None
            fout.write(json.dumps(rec, ensure_ascii=False) + "\n")
            n += 1
    print(f"tokenize: {n} lines in {time.perf_counter() - start:.2f}s", file=sys.stderr)
    return 0
