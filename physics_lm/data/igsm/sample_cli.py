"""Sample iGSM problems on device (JAX) and write them as JSONL.

    python -m physics_lm.data.igsm sample --preset med --n 1000 --seed 0 [--op 20] [--format qp]
        [--split train|test|all] [--reask] --out problems.jsonl
    python -m physics_lm.data.igsm sample --preset custom --max_op 10 --max_edge 16 ...

One line per problem: ``problem``, ``question``, ``solution``, ``answer`` (text exactly in the
official format of the reference corpora, without leading spaces), ``op``, ``tokens`` (ids of the
shared vocabulary, the training row without padding) and a few labels. The problems are those
the trainer would see: the same jitted `IGSMTask.sample`, keys ``fold_in(PRNGKey(seed), chunk)``.
With ``--reask`` (Part 2.1 "reask", `gen/reask.py`): problems of op ``--op`` (default: the first
out-of-distribution op, med 20, hard 28) asked about another of their parameters; lines add
``orig_op``. With ``--retry retry|retry_weak|retry_miss --retry_rate P`` (Part 2.2 retry data,
`gen/retry.py`): solutions with ``Define <X> as BACK.`` sentences; lines add ``retry_kind``,
``retry_rate``, ``n_back`` and ``solution_clean`` (the solution without them), as the official
retry corpora do.

    python -m physics_lm.data.igsm sample --preset med --n 1000 --retry retry --retry_rate 0.5 \
        --out retry.jsonl
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time

from physics_lm import compile_cache

FIELDS = ("n_solution_params", "question_kind", "template_bin", "depth", "n_sentences")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--preset", choices=("med", "hard", "custom"), default="med")
    parser.add_argument("--max_op", type=int, default=None, help="override (custom: required)")
    parser.add_argument("--max_edge", type=int, default=None,
                        help="override (custom: required)")
    parser.add_argument("--n", type=int, required=True, help="number of problems")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--op", type=int, default=None, help="fixed op (e.g. OOD 20-23 / 28-32)")
    parser.add_argument("--format", dest="fmt", choices=("pq", "qp"), default="pq")
    parser.add_argument("--split", choices=("train", "test", "all"), default="all")
    parser.add_argument("--reask", action="store_true",
                        help="ask each problem about another of its parameters (Part 2.1 reask)")
    parser.add_argument("--retry", choices=("none", "retry", "retry_weak", "retry_miss"),
                        default="none", help="Part 2.2 retry data: the kind of wrong parameters")
    parser.add_argument("--retry_rate", type=float, default=None,
                        help="retry data: probability of each further BACK sentence (0, 0.75]")
    parser.add_argument("--batch", type=int, default=256, help="problems per jitted call")
    parser.add_argument("--out", required=True, help="output JSONL ('-' = stdout)")
    compile_cache.add_argument(parser)


def run(ns: argparse.Namespace) -> int:
    import jax
    import numpy as np

    from physics_lm.data.igsm.task import IGSMTask
    from physics_lm.data.igsm.text.vocab import get_vocab, host_texts

    if ns.n < 1:
        raise ValueError(f"--n={ns.n} must be >= 1")
    compile_cache.enable_from_arg(ns.compile_cache)
    rate = ns.retry_rate if ns.retry_rate is not None else 0.0
    if ns.retry != "none" and ns.retry_rate is None:
        raise ValueError(f"--retry {ns.retry} needs --retry_rate")
    probe = IGSMTask(ns.preset, max_op=ns.max_op, max_edge=ns.max_edge, op=ns.op, fmt=ns.fmt,
                     split=ns.split, reask=ns.reask, seq_len=1 << 16, retry=ns.retry,
                     retry_rate=rate)
    task = dataclasses.replace(probe, seq_len=max(2048, probe.min_seq_len + 512))
    batch = min(ns.batch, ns.n)
    key0 = jax.random.PRNGKey(ns.seed)
    # Unoptimised code compiles ~13 s faster here but samples ~4x slower (1.0k vs 4.1k med
    # problems/s on 2 busy cores): it wins below ~16k problems.
    fast_compile = {"xla_backend_optimization_level": 0} if ns.n < 16384 else None
    f = jax.jit(lambda k: task.sample(k, batch)).lower(key0).compile(fast_compile)
    vocab = get_vocab()
    out = sys.stdout if ns.out == "-" else open(ns.out, "w", encoding="utf-8")  # noqa: SIM115
    t0, written, chunk = time.time(), 0, 0
    try:
        pending = f(jax.random.fold_in(key0, 0))
        while written < ns.n:
            b = jax.tree.map(np.asarray, pending)
            chunk += 1
            if written + batch < ns.n:  # the next chunk samples on device while this one is written
                pending = f(jax.random.fold_in(key0, chunk))
            # Python ints once per chunk, and each row cut at its length: the rows are padded to
            # seq_len (>= 2,048), and walking the padding per row was most of the host's time.
            labels = {k: np.asarray(v).tolist() for k, v in b.labels.items()
                      if np.ndim(v) == 1}
            lines = []
            for r in range(min(batch, ns.n - written)):
                if not labels["valid"][r] or labels["overflow"][r]:
                    raise SystemExit(f"row {r} of chunk {chunk - 1} is not valid")
                tokens = b.tokens[r, :labels["length"][r]].tolist()
                problem, question, solution, answer = host_texts(vocab, tokens)
                rec = {"problem": problem, "question": question, "solution": solution,
                       "answer": answer, "op": labels["op"][r],
                       **{k: labels[k][r] for k in FIELDS},
                       **({"orig_op": labels["orig_op"][r]} if task.reask else {}),
                       **(_retry_fields(task, solution, labels["n_back"][r])
                          if task.retry != "none" else {}),
                       "tokens": tokens}
                lines.append(json.dumps(rec, ensure_ascii=False))
            out.write("\n".join(lines) + "\n")
            written += len(lines)
    finally:
        if out is not sys.stdout:
            out.close()
    print(f"wrote {written} {task.name} problems in {time.time() - t0:.1f}s", file=sys.stderr)
    return 0


def _retry_fields(task, solution: str, n_back: int) -> dict:
    from physics_lm.data.igsm.text.retry import split_retry

    return {"retry_kind": task.retry, "retry_rate": task.retry_rate, "n_back": n_back,
            "solution_clean": split_retry(solution)[0]}
