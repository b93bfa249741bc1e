"""Benchmark and distribution report of the on-device iGSM sampler.

    python benchmarks/igsm_sampler.py [--batch 1024] [--calls 5] [--splits train,all]
                                      [--cores 1] [--share smoke:16,depth20:4] [--json PATH]
    python benchmarks/igsm_sampler.py --stats 20000 [--preset med] [--op K]
    python benchmarks/igsm_sampler.py --retry retry:0.5 ...   (Part 2.2 retry data, mask mistake)

Default mode: jit the sampler once per preset and split, time several calls with
block_until_ready and print problems per wall-second and per CPU-second of this process (all XLA
threads) next to the official generator's per-core rate on this machine's CPU (SPEC §21: 47.8 med
/ 31.6 hard problems per second, all template bins, one Python process), with the rejection waste
(candidates drawn per problem). `--cores 1` (default) pins the process to one core first, so the
figure is per core by construction (XLA's thread pool only adds synchronisation on a shared
machine); `--cores 0` uses every core. Two outputs are timed: "train batch" is what the
training step consumes (`IGSMTask.sample` -> tokens and loss mask; XLA drops the metadata nobody
reads), "all outputs" is `sample_arrays` with every label (template bin, counts, ...).
`split=train` is what training runs (bins 0-15, so ~30 % more candidates are rejected). Then, for
each `--share` config:batch, the sampler's share of one real jitted training step of that config
(`configs/igsm.py:smoke`, `configs/igsm_depth20.py`) at that batch size: time(sampler alone) /
time(train step, sampler inside). `--stats N`: sample N problems and print the distributions the
tests check (op, depth, sentences, solution/template parameters, abstract questions, rendered
length and overflow shares for seq_len 512-1280).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import time
from collections import Counter
from pathlib import Path

import jax
import numpy as np

from physics_lm.config import from_config_dict
from physics_lm.data.igsm.gen.render import Tables
from physics_lm.data.igsm.gen.sampler import PRESETS, SamplerConfig, sample_arrays
from physics_lm.data.igsm.task import IGSMTask
from physics_lm.data.igsm.text.vocab import get_vocab
from physics_lm.train.setup import build_experiment, fresh_state
from physics_lm.train.trainer import jit_steps

OFFICIAL = {"med": 47.8, "hard": 31.6}  # problems/s/core, official generator, SPEC §21


RETRY = ("none", 0.0)  # (kind, rate) of every timed sampler, from --retry


def _fn(preset: str, batch: int, op: int | None, seq_len: int, bins):
    max_op, max_edge = PRESETS[preset]
    cfg = SamplerConfig(max_op, max_edge, op, "pq", bins, seq_len, retry=RETRY[0],
                        retry_rate=RETRY[1])
    tb = Tables(get_vocab())
    return jax.jit(lambda k: sample_arrays(k, batch, cfg, tb))


def _timed(fn, calls: int) -> tuple[float, float, list]:
    """(median wall s, median CPU s of this process, outputs) over `calls` calls of fn(i)."""
    walls, cpus, outs = [], [], []
    for i in range(calls):
        c0, w0 = time.process_time(), time.perf_counter()
        outs.append(jax.block_until_ready(fn(i)))
        walls.append(time.perf_counter() - w0)
        cpus.append(time.process_time() - c0)
    return float(np.median(walls)), float(np.median(cpus)), outs


def _train_batch_fn(preset: str, batch: int, seq_len: int, split: str):
    task = IGSMTask(preset=preset, split=split, seq_len=seq_len, retry=RETRY[0],
                    retry_rate=RETRY[1], retry_mask="none" if RETRY[0] == "none" else "mistake")

    def fn(k):
        b = task.sample(k, batch)
        return b.tokens, b.loss_mask

    return jax.jit(fn)


def bench(preset: str, batch: int, calls: int, bins) -> dict:
    seq_len = 1024 if preset == "med" else 1280
    f = _fn(preset, batch, None, seq_len, bins)
    t0 = time.time()
    out = jax.block_until_ready(f(jax.random.PRNGKey(0)))
    compile_s = time.time() - t0
    wall, cpu, outs = _timed(lambda i: f(jax.random.PRNGKey(i + 1)), calls)
    cands = [int(o["stats"]["candidates"]) for o in outs]
    out = outs[-1]
    g = _train_batch_fn(preset, batch, seq_len, "all" if bins is None else "train")
    jax.block_until_ready(g(jax.random.PRNGKey(0)))
    t_wall, t_cpu, _ = _timed(lambda i: g(jax.random.PRNGKey(i + 1)), calls)
    rate, per_cpu, train_cpu = batch / wall, batch / cpu, batch / t_cpu
    return {"preset": preset, "batch": batch, "bins": "train" if bins else "all",
            "retry": f"{RETRY[0]}:{RETRY[1]}",
            "cores": len(os.sched_getaffinity(0)),
            "compile_s": round(compile_s, 1), "median_s": round(wall, 4),
            "problems_per_s": round(rate, 1), "problems_per_cpu_s": round(per_cpu, 1),
            "train_batch_per_s": round(batch / t_wall, 1),
            "train_batch_per_cpu_s": round(train_cpu, 1),
            "official_per_core": OFFICIAL[preset],
            "ratio": round(rate / OFFICIAL[preset], 1),
            "ratio_per_core": round(per_cpu / OFFICIAL[preset], 1),
            "train_ratio_per_core": round(train_cpu / OFFICIAL[preset], 1),
            "candidates_per_problem": round(float(np.mean(cands)) / batch, 2),
            "valid": float(np.mean(out["valid"])), "backend": jax.default_backend(),
            "device": str(jax.devices()[0])}


def _load_config(name: str):
    path = Path(__file__).resolve().parents[1] / "configs" / (
        "igsm.py" if name == "smoke" else f"igsm_{name}.py")
    spec = importlib.util.spec_from_file_location(f"bench_cfg_{name}", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.get_config("smoke" if name == "smoke" else None)


def step_share(name: str, batch: int, calls: int) -> dict:
    """Sampler share of one jitted train step of a real config, at `batch` rows, one device."""
    c = _load_config(name)
    c.train.batch_size = batch
    c.optim.grad_accum = 1
    c.mesh.data = 1
    cfg = from_config_dict(c)
    exp = build_experiment(cfg, jax.devices()[:1])
    state = fresh_state(exp)
    train, _ = jit_steps(exp)
    sample = jax.jit(lambda k: exp.task.sample(k, batch))
    with jax.set_mesh(exp.mesh):
        train = train.lower(state).compile()
        state, m = train(state)
        jax.block_until_ready(m)
        jax.block_until_ready(sample(jax.random.PRNGKey(0)))

        def step(_):
            nonlocal state
            state, m = train(state)
            return m

        step_wall, step_cpu, _ = _timed(step, calls)
        samp_wall, samp_cpu, _ = _timed(lambda i: sample(jax.random.PRNGKey(i + 1)), calls)
    n_params = sum(x.size for x in jax.tree.leaves(state.params))
    return {"config": name, "batch": batch, "seq_len": exp.task.seq_len,
            "params_M": round(n_params / 1e6, 1), "step_s": round(step_wall, 4),
            "sampler_s": round(samp_wall, 4), "share": round(samp_wall / step_wall, 4),
            "share_cpu": round(samp_cpu / step_cpu, 4), "backend": jax.default_backend()}


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
    ap.add_argument("--splits", default="train,all", help="comma-separated: train and/or all")
    ap.add_argument("--share", default="smoke:16,depth20:4",
                    help="config:batch pairs for the share of a train step ('' to skip); "
                         "depth20 at its real batch 512 needs an accelerator")
    ap.add_argument("--cores", type=int, default=1,
                    help="pin the process to this many cores first (0 = all)")
    ap.add_argument("--stats", type=int, default=0)
    ap.add_argument("--op", type=int, default=None)
    ap.add_argument("--json", default=None)
    ap.add_argument("--retry", default="none:0", help="KIND:RATE of retry data (Part 2.2)")
    args = ap.parse_args()
    global RETRY
    kind, _, rate = args.retry.partition(":")
    RETRY = (kind, float(rate or 0))
    if args.cores:
        os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[: args.cores])
    rows = []
    for preset in args.presets.split(","):
        if args.stats:
            rows.append(stats(preset, args.stats, args.op))
            print(json.dumps(rows[-1]), flush=True)
            continue
        for split in args.splits.split(","):
            rows.append(bench(preset, args.batch, args.calls,
                              tuple(range(16)) if split == "train" else None))
    if not args.stats:
        print(f"cores: {len(os.sched_getaffinity(0))}; official per core: "
              + ", ".join(f"{k} {v}" for k, v in OFFICIAL.items()) + " problems/s")
        print(f"{'preset':6} {'batch':>6} {'split':>5} | {'train batch':>11} {'x core':>6} | "
              f"{'all outputs':>11} {'x core':>6} {'per wall-s':>10} | {'cand/problem':>12} "
              f"{'compile s':>9}")
        print(f"{'':20} | {'per CPU-s':>11} {'':6} | {'per CPU-s':>11}")
        for r in rows:
            print(f"{r['preset']:6} {r['batch']:6d} {r['bins']:>5} | "
                  f"{r['train_batch_per_cpu_s']:11.1f} {r['train_ratio_per_core']:5.1f}x | "
                  f"{r['problems_per_cpu_s']:11.1f} {r['ratio_per_core']:5.1f}x "
                  f"{r['problems_per_s']:10.1f} | {r['candidates_per_problem']:12.2f} "
                  f"{r['compile_s']:9.1f}")
        shares = [step_share(n, int(b), min(args.calls, 3))
                  for n, b in (x.split(":") for x in args.share.split(",") if x)]
        if shares:
            print(f"\n{'config':8} {'batch':>5} {'seq':>5} {'params':>7} {'step s':>8} "
                  f"{'sampler s':>9} {'share':>7} {'share (CPU)':>11}")
            for r in shares:
                print(f"{r['config']:8} {r['batch']:5d} {r['seq_len']:5d} {r['params_M']:6.1f}M "
                      f"{r['step_s']:8.3f} {r['sampler_s']:9.4f} {r['share']:7.1%} "
                      f"{r['share_cpu']:11.1%}")
        rows += shares
        print(f"backend: {jax.default_backend()} ({jax.devices()[0]})")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
