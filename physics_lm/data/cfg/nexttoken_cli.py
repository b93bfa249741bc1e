"""Add the exact next-token distribution to JSON-line token strings ("probs", SPEC §4 layout).

Each output line is the input line plus `probs` (L + 1 rows of num_sym + 1 floats: EOS, then
terminals 1..num_sym), `log_prob_string`, and `prefix_valid` (false if some prefix of the string
is impossible; those rows are null instead of the official DP's exception).
"""

from __future__ import annotations

import argparse
import json

import numpy as np

from physics_lm.data.cfg.grammar import load_grammar
from physics_lm.data.cfg.nexttoken import chosen_probs, next_token_probs, prefix_is_valid
from physics_lm.data.cfg.verify_cli import open_out, read_token_lines


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--grammar", required=True, help="shipped grammar name (cfg3b..cfg3k)")
    parser.add_argument("--in", dest="inp", required=True, help="input .jsonl path ('-': stdin)")
    parser.add_argument("--out", default="-", help="output .jsonl path, '-' for stdout")


def run(args: argparse.Namespace) -> int:
    """Validates the whole input first, then computes and writes one line per string."""
    grammar = load_grammar(args.grammar)
    rows = list(read_token_lines(args.inp))
    with open_out(args.out) as f:
        for rec, _ in rows:
            probs = next_token_probs(grammar, rec["tokens"])
            ok = prefix_is_valid(probs)
            log_p = None
            if ok.all():
                with np.errstate(divide="ignore"):
                    log_p = float(np.log(chosen_probs(probs, rec["tokens"])).sum())
            out = {**rec,
                   "probs": [p.tolist() if v else None for p, v in zip(probs, ok, strict=True)],
                   "log_prob_string": log_p if log_p is not None and np.isfinite(log_p) else None,
                   "prefix_valid": bool(ok.all())}
            f.write(json.dumps(out, separators=(",", ":")) + "\n")
    return 0
