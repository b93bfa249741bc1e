"""Membership-check throughput (strings/s) against the official `solve_dp_noneq_fast`.

Usage: python benchmarks/cfg_membership.py [--grammars cfg3b,cfg3f,cfg3k] [--batch 1,256]
                                           [--json OUT]

Strings are fresh draws of the jitted sampler (`sample_strings`), checked with `check_strings`
(bucketed lengths, memory-capped sub-batches) on the current JAX backend, after a warm-up call on
the same strings has compiled every bucket. Batch 1 = one string per call. The peer is the
official DP's median CPU-seconds per string from SPEC §8.2 (1 core). On CPU we report CPU-seconds
of this process (all XLA threads; a shared machine's load does not count against us) and the
wall-clock rate beside it; on an accelerator the wall-clock rate is the number that counts.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import jax
import numpy as np

from physics_lm.data.cfg.grammar import load_grammar
from physics_lm.data.cfg.membership import check_strings
from physics_lm.data.cfg.sampler import sample_strings

OFFICIAL_CPU_S_PER_STRING = {"cfg3b": 4.50, "cfg3f": 4.36, "cfg3k": 21.4}  # SPEC §8.2 medians


def _fresh_strings(name: str, n: int, seed: int) -> list[list[int]]:
    s = jax.device_get(sample_strings(jax.random.key(seed), load_grammar(name), n))
    return [s.tokens[b, : int(s.length[b])].tolist() for b in range(n)]


def _time(fn) -> tuple[float, float]:
    cpu0, wall0 = time.process_time(), time.perf_counter()
    fn()
    return time.process_time() - cpu0, time.perf_counter() - wall0


def bench(name: str, batch: int, n_single: int, seed: int) -> dict:
    g = load_grammar(name)
    n = batch if batch > 1 else n_single
    strings = _fresh_strings(name, n, seed)
    if batch > 1:
        run = lambda: check_strings(g, strings)
    else:
        run = lambda: [check_strings(g, [s]) for s in strings]
    warm = run()  # compiles every (bucket, batch shape) these strings need
    assert np.concatenate([np.ravel(w) for w in warm]).all(), "sampled strings must be members"
    cpu, wall = _time(run)
    peer = OFFICIAL_CPU_S_PER_STRING[name]
    return {"grammar": name, "batch": batch, "n_strings": n,
            "mean_len": float(np.mean([len(s) for s in strings])),
            "strings_per_cpu_s": n / cpu, "strings_per_wall_s": n / wall,
            "official_cpu_s_per_string": peer,
            "speedup_cpu": peer * n / cpu, "speedup_wall": peer * n / wall}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--grammars", default="cfg3b,cfg3f,cfg3k")
    ap.add_argument("--batch", default="1,256", help="comma-separated batch sizes")
    ap.add_argument("--n-single", type=int, default=8, help="strings timed one by one at batch 1")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path, default=None, help="also write the rows as JSON")
    args = ap.parse_args()
    dev = jax.devices()[0]
    print(f"backend {jax.default_backend()} ({dev.device_kind}); peer = official DP, SPEC §8.2")
    head = (f"{'grammar':8} {'batch':>5} {'len':>5} {'str/cpu-s':>10} {'str/wall-s':>10} "
            f"{'official s/str':>14} {'x (cpu)':>9} {'x (wall)':>9}")
    print(head)
    rows = []
    for name in args.grammars.split(","):
        for batch in (int(b) for b in args.batch.split(",")):
            r = bench(name, batch, args.n_single, args.seed)
            rows.append(r)
            print(f"{name:8} {batch:>5} {r['mean_len']:>5.0f} {r['strings_per_cpu_s']:>10.1f} "
                  f"{r['strings_per_wall_s']:>10.1f} {r['official_cpu_s_per_string']:>14.2f} "
                  f"{r['speedup_cpu']:>9.0f} {r['speedup_wall']:>9.0f}", flush=True)
    if args.json:
        args.json.write_text(json.dumps({"backend": jax.default_backend(),
                                         "device": dev.device_kind, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
