"""Write CFG strings with NT labels as JSON lines (the samples_public.jsonl layout).

String i is drawn from `jax.random.fold_in(jax.random.key(seed), i)`, so the output does not depend
on the chunk size and `--n 100` is a prefix of `--n 1000`. With `--reference` the seed-exact host
sampler is used instead: line i is the official `generate_onedata(random.Random(seed + i))`.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import sys

import jax
import numpy as np

from physics_lm import compile_cache
from physics_lm.data.cfg.grammar import Grammar, load_grammar
from physics_lm.data.cfg.reference import global_ancestors, sample_reference
from physics_lm.data.cfg.sampler import CFGStrings, sample_from_keys

_CHUNK = 512  # strings per jitted call; the last chunk is padded so there is one compile


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--grammar", default="cfg3f", help="shipped grammar name (cfg3b..cfg3k)")
    parser.add_argument("--n", type=int, default=100, help="number of strings (>= 1)")
    parser.add_argument("--seed", type=int, default=0,
                        help="jax key seed (the first random.Random seed with --reference)")
    parser.add_argument("--out", default="-", help="output .jsonl path, '-' for stdout")
    parser.add_argument("--reference", action="store_true",
                        help="use the seed-exact host sampler (official strings, slow)")
    compile_cache.add_argument(parser)


@functools.partial(jax.jit, static_argnames=("grammar",))
def _sample_chunk(key: jax.Array, start: jax.Array, grammar: Grammar) -> CFGStrings:
    idx_N = start + np.arange(_CHUNK)
    return sample_from_keys(jax.vmap(lambda i: jax.random.fold_in(key, i))(idx_N), grammar)


def _jax_records(grammar: Grammar, n: int, seed: int):
    key = jax.random.key(seed)
    for start in range(0, n, _CHUNK):
        s = jax.device_get(_sample_chunk(key, start, grammar))
        for b in range(min(_CHUNK, n - start)):
            L = int(s.length[b])
            anc_DxL = s.nt_ancestor[b, :L].T
            yield {"grammar": grammar.name, "index": start + b, "length": L,
                   "tokens": s.tokens[b, :L].tolist(),
                   "nt_ancestor": global_ancestors(grammar, anc_DxL).tolist(),
                   "nt_boundary": s.nt_boundary[b, :L].T.tolist()}


def _reference_records(grammar: Grammar, n: int, seed: int):
    for i in range(n):
        r = sample_reference(grammar, seed + i)
        yield {"grammar": grammar.name, "seed": seed + i, "length": len(r.tokens),
               "tokens": r.tokens, "nt_ancestor": r.nt_ancestor, "nt_boundary": r.nt_boundary}


def run(args: argparse.Namespace) -> int:
    """Validates the arguments (ValueError -> exit 2 in __main__) and writes the lines."""
    grammar = load_grammar(args.grammar)  # ValueError naming the value and the known names
    if args.n < 1:
        raise ValueError(f"--n={args.n} must be >= 1")
    if not args.reference:
        compile_cache.enable_from_arg(args.compile_cache)
    make = _reference_records if args.reference else _jax_records
    with contextlib.ExitStack() as stack:
        if args.out == "-":
            f = sys.stdout
        else:
            try:
                f = stack.enter_context(open(args.out, "w"))
            except OSError as e:
                raise ValueError(f"--out={args.out!r}: {e.strerror}") from None
        try:
            for rec in make(grammar, args.n, args.seed):
                f.write(json.dumps(rec, separators=(",", ":")) + "\n")
            f.flush()
        except BrokenPipeError:  # e.g. `| head`: the reader has all it wants
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115 (keeps the exit flush quiet)
    return 0
