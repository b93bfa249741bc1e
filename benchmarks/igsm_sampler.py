"""Benchmark and distribution report of the on-device iGSM sampler.

    python benchmarks/igsm_sampler.py [--batch 1024] [--calls 5] [--json PATH]
    python benchmarks/igsm_sampler.py --stats 20000 [--preset med] [--op K]

Default mode: jit `IGSMTask(preset).sample` once per preset, time several calls with
block_until_ready and print problems/s next to the official generator's rate on this machine's
CPU (SPEC §21: 47.8 med / 31.6 hard problems per second per core), with the rejection waste
(candidates drawn per problem). `--stats N`: sample N problems and print the distributions the
tests check (op, depth, sentences, solution/template parameters, abstract questions, rendered
length and overflow shares for seq_len 512/768/1024).
"""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter
from pathlib import Path

import jax
import numpy as np

from physics_lm.data.igsm.render import Tables
from physics_lm.data.igsm.sampler import PRESETS, SamplerConfig, sample_arrays
from physics_lm.data.igsm.vocab import get_vocab

OFFICIAL = {"med": 47.8, "hard": 31.6}  # problems/s/core, official generator, SPEC §21


def _fn(preset: str, batch: int, op: int | None, seq_len: int, bins):
    max_op, max_edge = PRESETS[preset]
    cfg = SamplerConfig(max_op, max_edge, op, "pq", bins, seq_len)
    tb = Tables(get_vocab())
    return jax.jit(lambda k: sample_arrays(k, batch, cfg, tb))


def bench(preset: str, batch: int, calls: int, bins) -> dict:
    f = _fn(preset, batch, None, 1024 if preset == "med" else 1280, bins)
    t0 = time.time()
    out = jax.block_until_ready(f(jax.random.PRNGKey(0)))
    compile_s = time.time() - t0
    times, cands = [], []
    for i in range(calls):
        t0 = time.time()
        out = jax.block_until_ready(f(jax.random.PRNGKey(i + 1)))
        times.append(time.time() - t0)
        cands.append(int(out["stats"]["candidates"]))
    rate = batch / float(np.median(times))
    return {"preset": preset, "batch": batch, "bins": "train" if bins else "all",
            "compile_s": round(compile_s, 1), "median_s": round(float(np.median(times)), 4),
            "problems_per_s": round(rate, 1), "official_per_core": OFFICIAL[preset],
            "ratio": round(rate / OFFICIAL[preset], 1),
            "candidates_per_problem": round(float(np.mean(cands)) / batch, 2),
            "valid": float(np.mean(out["valid"])), "backend": jax.default_backend(),
            "device": str(jax.devices()[0])}


def stats(preset: str, n: int, op: int | None, batch: int = 1000) -> dict:
    f = _fn(preset, batch, op, 2048, None)
    keys = ("op", "depth", "n_sentences", "n_solution_params", "n_template_params",
            "question_kind", "length", "template_bin", "valid", "n_mentioned_params")
    acc: dict[str, list] = {k: [] for k in keys}
    for i in range(-(-n // batch)):
        out = f(jax.random.PRNGKey(1000 + i))
        for k in keys:
            acc[k].append(np.asarray(out[k]))
    a = {k: np.concatenate(v)[:n] for k, v in acc.items()}
    res = {"preset": preset, "n": n, "op_fixed": op, "valid": float(a["valid"].mean())}
    for k in ("op", "depth", "n_sentences", "n_solution_params", "n_template_params",
              "n_mentioned_params", "template_bin"):
        c = Counter(a[k].tolist())
        res[k] = {int(x): round(c[x] / n, 4) for x in sorted(c)}
        res[k + "_mean"] = round(float(a[k].mean()), 3)
    res["abstract_share"] = round(float(a["question_kind"].mean()), 4)
    L = a["length"]
    res["length"] = {"mean": round(float(L.mean()), 1), "p50": int(np.median(L)),
                     "p99": int(np.percentile(L, 99)), "max": int(L.max())}
    res["overflow_share"] = {T: round(float((L > T).mean()), 5) for T in (512, 768, 1024, 1280)}
    return res


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=1024)
    ap.add_argument("--calls", type=int, default=5)
    ap.add_argument("--presets", default="med,hard")
    ap.add_argument("--split", default="all", choices=("all", "train"))
    ap.add_argument("--stats", type=int, default=0)
    ap.add_argument("--op", type=int, default=None)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    rows = []
    for preset in args.presets.split(","):
        if args.stats:
            rows.append(stats(preset, args.stats, args.op))
            print(json.dumps(rows[-1]), flush=True)
            continue
        rows.append(bench(preset, args.batch, args.calls,
                          tuple(range(16)) if args.split == "train" else None))
    if not args.stats:
        print(f"{'preset':6} {'batch':>6} {'split':>5} {'problems/s':>11} {'official/core':>13} "
              f"{'ratio':>7} {'cand/problem':>12} {'compile s':>9}")
        for r in rows:
            print(f"{r['preset']:6} {r['batch']:6d} {r['bins']:>5} {r['problems_per_s']:11.1f} "
                  f"{r['official_per_core']:13.1f} {r['ratio']:6.1f}x "
                  f"{r['candidates_per_problem']:12.2f} {r['compile_s']:9.1f}")
        print(f"backend: {jax.default_backend()} ({jax.devices()[0]})")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
