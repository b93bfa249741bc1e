"""Largest per-device batch of the headline configs, by the compiled train step's memory analysis.

  python benchmarks/max_batch.py [--cases depth20,cfg3f] [--policies full,save_dots]
                                 [--attention xla] [--limits_gb 80,141] [--probes 2]
                                 [--start 8] [--json OUT.json]

For each case, remat policy and attention implementation, compiles the real jitted train step
(sampler inside, AdamW, donated state, grad_accum=1) on one device at a few batch sizes and
reports the largest batch whose peak (arguments + outputs + temporaries - aliased, what the
trainer's fit check compares) is within each limit. Peak is linear in the batch, so the search
fits a line through the probes, probes its prediction, and bisects (multiples of 8) until the
fitting and the failing batch are 8 apart or `--probes` compiles are spent; with fewer probes the
answer is the line's (marked "fit"). On this CPU a GPT2-20-9 compile takes minutes, so the
default is 2 probes; on a GPU (the suite) compiles take seconds and the search converges.

Cases mirror configs/igsm_depth20.py (GPT2-20-9, rotary, bf16, iGSM-med, T=768) and configs/cfg.py
(GPT-2 small, rotary, bf16, cfg3f, T=512); they are built here (not imported from configs/) so
the script runs from a bare checkout. XLA:CPU's analysis approximates an accelerator's: it runs
bf16 matmuls in f32 and materialises some broadcasts; cudnn/splash fall back to XLA attention
here, so only an accelerator separates the attention implementations.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # a bare checkout: no install

GB = 1e9
MULTIPLE = 8


def case_config(case: str, batch: int, *, attention: str = "xla", remat_policy: str = "none",
                quick: bool = False, grad_accum: int = 1) -> dict:
    """The config dict of `case` at `batch` (quick: tiny shapes for a CPU smoke run)."""
    if case == "cfg3f":
        layers, heads, width, seq_len = (2, 2, 32, 64) if quick else (12, 12, 768, 512)
        task = {"name": "cfg", "grammar": "cfg3f", "seq_len": seq_len, "packing": "pack",
                "corrupt_frac": 0.0, "corrupt_rate": 0.15}
        optim = {"lr": 3e-4, "schedule": "linear"}
    elif case == "depth20":
        layers, heads, width, seq_len = (2, 2, 32, 320) if quick else (20, 9, 576, 768)
        task = {"name": "igsm", "preset": "med", "fmt": "pq", "split": "train",
                "train_bins": tuple(range(16)), "seq_len": seq_len, "loss_on": "solution",
                "groups": 1}
        if quick:
            task.update(preset="custom", max_op=3, max_edge=6)
        optim = {"lr": 0.002, "weight_decay": 0.05, "final_lr_frac": 0.01}
    else:
        raise ValueError(f"unknown case {case!r}; known: cfg3f, depth20")
    return {"task": task,
            "model": {"num_layers": layers, "num_heads": heads, "d_model": width,
                      "max_len": seq_len, "pos": "rotary", "compute_dtype": "bfloat16",
                      "attention": attention, "remat_policy": remat_policy},
            "optim": {**optim, "warmup_steps": 1, "grad_accum": grad_accum},
            "train": {"batch_size": batch, "num_steps": 100_000},
            "mesh": {"data": 1}}


def compile_step(config: dict):
    """(experiment, compiled train step) on the first device, from abstract state only."""
    import jax

    from physics_lm.config import from_config_dict
    from physics_lm.train.setup import build_experiment
    from physics_lm.train.trainer import jit_steps

    exp = build_experiment(from_config_dict(config), jax.devices()[:1])
    jit_train, _ = jit_steps(exp)
    with jax.set_mesh(exp.mesh):
        return exp, jit_train.lower(exp.abstract_state).compile()


def step_peak(config: dict) -> dict:
    from physics_lm.train import memory

    t = time.perf_counter()
    _, compiled = compile_step(config)
    mem = memory.step_memory(compiled)
    if mem is None:
        raise RuntimeError("this backend gives no compiled memory analysis")
    return {"peak": mem.peak, "temp": mem.temp, "state": mem.peak - mem.temp,
            "compile_s": time.perf_counter() - t}


def largest_batch(peak_at: Callable[[int], dict], limits: list[float], *, start: int = 8,
                  max_probes: int = 2) -> tuple[dict[float, tuple[int, str]], dict[int, dict]]:
    """Per limit (bytes): (largest batch, "compiled" | "fit"); and every probe by batch.

    "compiled": a probe at that batch fits and one 8 rows larger does not; "fit": the line
    through the probes (one probe: its state + temporaries x batch / its batch) predicts it.
    """
    probes: dict[int, dict] = {}

    def line() -> tuple[float, float]:
        (b1, m1), *rest = sorted(probes.items())[-2:]
        if not rest:  # temporaries scale with the batch, the state does not
            return m1["state"], m1["temp"] / b1
        b2, m2 = rest[0]
        slope = (m2["peak"] - m1["peak"]) / (b2 - b1)
        return m2["peak"] - slope * b2, slope

    def bracket(limit: float) -> tuple[int, int | None]:
        fit = [b for b, m in probes.items() if m["peak"] <= limit]
        over = [b for b, m in probes.items() if m["peak"] > limit]
        return max(fit, default=0), min(over, default=None)

    def predict(limit: float) -> int:
        base, per_row = line()
        return max(int((limit - base) / max(per_row, 1.0)) // MULTIPLE * MULTIPLE, 0)

    probes[start] = peak_at(start)
    for limit in sorted(limits):
        while len(probes) < max_probes:
            lo, hi = bracket(limit)
            if hi is not None and hi - lo <= MULTIPLE:
                break
            b = predict(limit)
            if b <= lo or (hi is not None and b >= hi) or b in probes:
                b = lo + MULTIPLE if hi is None or b <= lo else hi - MULTIPLE
                if hi is not None and not lo < b < hi:
                    b = (lo + hi) // 2 // MULTIPLE * MULTIPLE
            if b in probes or b <= 0:
                break
            probes[b] = peak_at(b)
    out = {}
    for limit in limits:
        lo, hi = bracket(limit)
        if hi is not None and hi - lo <= MULTIPLE:
            out[limit] = (lo, "compiled")
        else:
            pred = predict(limit)
            out[limit] = (min(pred, hi - MULTIPLE) if hi is not None else max(pred, lo), "fit")
    return out, probes


def search(case: str, policy: str, attention: str, limits_gb: list[float], *, start: int,
           max_probes: int, quick: bool = False) -> dict:
    """One row of the report (also the suite's, on the GPU)."""
    peak_at = lambda b: step_peak(case_config(case, b, attention=attention, remat_policy=policy,
                                              quick=quick))
    found, probes = largest_batch(peak_at, [g * GB for g in limits_gb], start=start,
                                  max_probes=max_probes)
    return {"case": case, "policy": policy, "attention": attention,
            "max_batch": {f"{g:g}": found[g * GB][0] for g in limits_gb},
            "how": {f"{g:g}": found[g * GB][1] for g in limits_gb},
            "probes": {str(b): m for b, m in sorted(probes.items())}}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cases", default="depth20,cfg3f")
    p.add_argument("--policies", default="full,save_dots")
    p.add_argument("--attention", default="xla", help="comma-separated: xla,cudnn,splash")
    p.add_argument("--limits_gb", default="80,141")
    p.add_argument("--start", type=int, default=8)
    p.add_argument("--probes", type=int, default=2, help="most compiles per case and policy")
    p.add_argument("--quick", action="store_true", help="tiny shapes (CI)")
    p.add_argument("--json", default=None)
    args = p.parse_args()
    import jax

    limits = [float(g) for g in args.limits_gb.split(",")]
    print(f"backend {jax.default_backend()} ({jax.devices()[0].device_kind}); largest batch per "
          f"device whose compiled peak fits {' / '.join(f'{g:g} GB' for g in limits)}")
    print(f"{'case':>8} {'policy':>9} {'attn':>6} {'probes (batch: peak GB)':>34} "
          + " ".join(f"{f'{g:g} GB':>12}" for g in limits), flush=True)
    rows = []
    for case in args.cases.split(","):
        for policy in args.policies.split(","):
            for attn in args.attention.split(","):
                r = search(case, policy, attn, limits, start=args.start, max_probes=args.probes,
                           quick=args.quick)
                rows.append(r)
                pr = ", ".join(f"{b}: {m['peak'] / GB:.1f}" for b, m in r["probes"].items())
                print(f"{case:>8} {policy:>9} {attn:>6} {pr:>34} " + " ".join(
                    f"{r['max_batch'][f'{g:g}']:>7} ({r['how'][f'{g:g}'][0]})" for g in limits),
                    flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps({"backend": jax.default_backend(),
                                               "device": jax.devices()[0].device_kind,
                                               "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
