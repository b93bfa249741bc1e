"""One prepared measurement on an accelerator: train MFU, samplers, decode, membership.

  python benchmarks/accelerator_suite.py [--out suite.json] [--budget_s 420] [--quick]
                                         [--attention xla,cudnn] [--max_batch_policies full]

Sections (each timed after its compile; a failing section is recorded and the suite goes on;
once `--budget_s` is spent the remaining sections are recorded as skipped):
  train_cfg3f_<attn>    GPT-2 small bf16, T=512, batch 96, rotary, on-device cfg3f sampler:
                        tokens/s and MFU against the card's dense bf16 peak (named in the output)
  train_depth20_<attn>  GPT2-20-9 on iGSM-med, T=768, full remat, at the largest batch whose
                        compiled peak fits the device (one probe compile, a linear fit, a check)
  sampler_share         the sampler alone (jitted) / the step: cfg3f at 96; iGSM-med at 512
                        (the depth20 step time scaled linearly in rows to 512)
  samplers              problems/s of iGSM med and hard at 65,536 rows; cfg3f strings/s
  decode_<case>         `eval.decode.generate` tokens/s at batch 1,024 (greedy, no EOS)
  membership            cfg3f membership checks/s at batch 4,096 (`check_strings`)
  projection            wall time of the paper's runs at the measured tokens/s
  max_batch             largest batch per remat policy at 80 / 141 GB (benchmarks/max_batch.py)
`--quick`: tiny models and batches and XLA's backend optimisation off (when jax is not imported
yet), so CI runs it on a CPU in about a minute (72 s on 2 busy cores). Attention defaults
to what the platform has (GPU: xla, cudnn; TPU: xla, splash; CPU: xla). Runs from a bare checkout.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE)]  # the repo and max_batch.py, without an install
os.environ.setdefault("XLA_PYTHON_CLIENT_MEM_FRACTION", "0.95")  # the card, not JAX's 75 %

import max_batch as mb  # noqa: E402

PAPER_RUNS = {"part1_cfg3f": ("train_cfg3f", 100_000 * 96 * 512),  # steps x batch x T
              "igsm_med_depth20": ("train_depth20", 100_000 * 512 * 768)}
FULL = dict(cfg_batch=96, depth_start=64, share_igsm=512, sampler_batch=65_536,
            decode_batch=1024, cfg_new=512, igsm_prompt=384, igsm_new=384, membership=4096,
            steps=10)
QUICK = dict(cfg_batch=8, depth_start=8, share_igsm=16, sampler_batch=64, decode_batch=8,
             cfg_new=8, igsm_prompt=8, igsm_new=8, membership=16, steps=2)


def _timed(fn: Callable[[], object], calls: int) -> float:
    """Median seconds of `calls` calls (after one warm-up)."""
    import jax
    import numpy as np

    jax.block_until_ready(fn())
    times = []
    for _ in range(calls):
        t = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - t)
    return float(np.median(times))


def device_info() -> dict:
    import jax

    from physics_lm.train import metrics

    dev = jax.devices()[0]
    info = {"backend": jax.default_backend(), "card": dev.device_kind,
            "devices": jax.device_count(), "jax": jax.__version__,
            "peak_bf16_flops": metrics.peak_flops_per_device(), "driver": None}
    kind = dev.device_kind.lower()
    info["peak_name"] = next((k for k in metrics.PEAK_FLOPS if k.lower() in kind), None)
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total",
                              "--format=csv,noheader"], capture_output=True, text=True, timeout=20)
        info["driver"] = out.stdout.strip().splitlines()[0] if out.returncode == 0 else None
    except (OSError, subprocess.TimeoutExpired, IndexError):
        pass
    from physics_lm.train.memory import device_limit
    info["memory_limit_bytes"] = device_limit(jax.devices()[:1])
    return info


def train_section(case: str, batch: int, attn: str, steps: int, quick: bool,
                  compiled=None) -> dict:
    """Tokens/s and MFU of the real train step (sampler inside) at `batch`."""
    import jax

    from physics_lm.models import attention
    from physics_lm.train import memory, metrics
    from physics_lm.train.setup import fresh_state

    policy = "full" if case == "depth20" else "none"
    t = time.perf_counter()
    attention._warned.clear()
    exp, step = compiled or mb.compile_step(mb.case_config(case, batch, attention=attn,
                                                            remat_policy=policy, quick=quick))
    compile_s = time.perf_counter() - t
    fell_back = sorted(attention._warned)
    with jax.set_mesh(exp.mesh):
        state = [fresh_state(exp)]

        def run():
            state[0], m = step(state[0])
            return m
        step_s = _timed(run, steps)
    T = exp.task.seq_len
    flops = metrics.train_flops_per_token(exp.model.cfg, T) * batch * T
    peak = metrics.peak_flops_per_device()
    mem = memory.step_memory(step)
    return {"case": case, "attention": attn, "remat_policy": policy, "batch": batch,
            "seq_len": T, "step_s": step_s, "tokens_per_s": batch * T / step_s,
            "mfu": flops / step_s / peak if peak else None, "compile_s": compile_s,
            "peak_bytes": mem.peak if mem else None, "fell_back": fell_back,
            "kernel_calls": attention.kernel_calls(step.as_text())}


def depth20_section(attn: str, p: dict, quick: bool, limit: int | None) -> dict:
    """The largest batch that fits `limit` (None: p["depth_start"]), then its train step."""
    cache: dict[int, tuple] = {}

    def peak_at(b: int) -> dict:
        cache[b] = mb.compile_step(mb.case_config("depth20", b, attention=attn,
                                                  remat_policy="full", quick=quick))
        from physics_lm.train.memory import step_memory
        m = step_memory(cache[b][1])
        return {"peak": m.peak, "temp": m.temp, "state": m.peak - m.temp}

    batch, how = p["depth_start"], "given"
    if limit:
        found, probes = mb.largest_batch(peak_at, [limit], start=p["depth_start"], max_probes=3)
        batch, how = found[limit]
        if batch <= 0:
            raise RuntimeError(f"no batch fits {limit} bytes: probes {probes}")
    out = train_section("depth20", batch, attn, p["steps"], quick, cache.get(batch))
    return {**out, "batch_how": how, "limit_bytes": limit}


def sampler_fns(quick: bool) -> dict[str, Callable]:
    """name -> (batch -> jitted zero-argument sampler call)."""
    import jax

    from physics_lm.data.cfg.grammar import load_grammar
    from physics_lm.data.cfg.sampler import sample_strings
    from physics_lm.data.cfg.task import CFGTask
    from physics_lm.data.igsm.task import IGSMTask

    key = jax.random.key(0)
    igsm = ({"igsm_custom_op3": dict(preset="custom", max_op=3, max_edge=6, seq_len=320)}
            if quick else {"igsm_med": dict(preset="med", seq_len=768),
                           "igsm_hard": dict(preset="hard", seq_len=1024)})

    def task_fn(task):
        return lambda b: (lambda f: lambda: f(key))(jax.jit(lambda k: task.sample(k, b).tokens))

    fns = {name: task_fn(IGSMTask(split="train", **kw)) for name, kw in igsm.items()}
    fns["cfg3f_rows"] = task_fn(CFGTask(grammar="cfg3f", seq_len=64 if quick else 512))
    g = load_grammar("cfg3f")
    fns["cfg3f_strings"] = lambda b: lambda: sample_strings(key, g, b).tokens
    return fns


def decode_section(case: str, attn: str, p: dict, quick: bool) -> dict:
    import flax.linen as nn
    import jax
    import jax.numpy as jnp

    from physics_lm.config import from_config_dict
    from physics_lm.eval.decode import generate
    from physics_lm.models.gpt2 import GPT2
    from physics_lm.train.setup import build_experiment

    exp = build_experiment(from_config_dict(mb.case_config(case, 8, attention=attn,
                                                           quick=quick)), jax.devices()[:1])
    cfg, B = exp.model.cfg, p["decode_batch"]
    P, new = (1, p["cfg_new"]) if case == "cfg3f" else (p["igsm_prompt"], p["igsm_new"])
    new = min(new, cfg.max_len - P)
    params = jax.jit(lambda: nn.unbox(GPT2(cfg).init(jax.random.key(0),
                                                     jnp.zeros((1, 8), jnp.int32))["params"]))()
    prompt = jax.random.randint(jax.random.key(1), (B, P), 1, cfg.vocab_size)
    plen = jnp.full((B,), P, jnp.int32)
    t = time.perf_counter()
    run = generate.lower(cfg, params, jax.random.key(2), prompt, plen, max_new=new,
                         temperature=0.0, eos_id=-1).compile()
    compile_s = time.perf_counter() - t
    wall = _timed(lambda: run(params, jax.random.key(2), prompt, plen, temperature=0.0), 1)
    return {"case": case, "attention": attn, "batch": B, "prompt": P, "new_tokens": new,
            "tokens_per_s": B * new / wall, "wall_s": wall, "compile_s": compile_s}


def membership_section(n: int) -> dict:
    import jax

    from physics_lm.data.cfg.grammar import load_grammar
    from physics_lm.data.cfg.membership import check_strings
    from physics_lm.data.cfg.sampler import sample_strings

    g = load_grammar("cfg3f")
    s = jax.device_get(sample_strings(jax.random.key(3), g, n))
    strings = [s.tokens[b, : int(s.length[b])].tolist() for b in range(n)]
    check_strings(g, strings)  # compiles every length bucket
    t = time.perf_counter()
    ok = check_strings(g, strings)
    wall = time.perf_counter() - t
    return {"grammar": "cfg3f", "batch": n, "checks_per_s": n / wall, "wall_s": wall,
            "all_members": bool(sum(map(bool, ok)) == n)}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("accelerator_suite.json"))
    ap.add_argument("--budget_s", type=float, default=420.0)
    ap.add_argument("--quick", action="store_true", help="tiny shapes: a CPU smoke run (CI)")
    ap.add_argument("--attention", default="", help="comma-separated; default: the platform's")
    ap.add_argument("--max_batch_policies", default="full,save_dots")
    ap.add_argument("--only", default="", help="comma-separated section-name prefixes to run")
    args = ap.parse_args(argv)
    if args.quick and "jax" not in sys.modules:  # a smoke run: compile time dominates on a CPU
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                                   + " --xla_backend_optimization_level=0").strip()
    import jax
    from suite_table import Suite, print_table

    p = QUICK if args.quick else FULL
    suite = Suite(args.out, args.budget_s, tuple(filter(None, args.only.split(","))))
    info = suite.run("device", device_info)
    impls = args.attention.split(",") if args.attention else {
        "gpu": ["xla", "cudnn"], "tpu": ["xla", "splash"]}.get(jax.default_backend(), ["xla"])
    limit = (info or {}).get("memory_limit_bytes")
    for a in impls:
        suite.run(f"train_cfg3f_{a}",
                  lambda a=a: train_section("cfg3f", p["cfg_batch"], a, p["steps"], args.quick))
    for a in impls:
        suite.run(f"train_depth20_{a}", lambda a=a: depth20_section(a, p, args.quick, limit))
    fns = sampler_fns(args.quick)
    igsm_name = next(n for n in fns if n.startswith("igsm"))

    def share() -> dict:
        out = {}
        for case, name, b in (("cfg3f", "cfg3f_rows", p["cfg_batch"]),
                              ("depth20", igsm_name, p["share_igsm"])):
            steps = [r for k, r in suite.results.items()
                     if k.startswith(f"train_{case}") and r["status"] == "ok"]
            if not steps:
                out[case] = {"error": "no train step measured"}
                continue
            best = min(steps, key=lambda r: r["step_s"] / r["batch"])
            step_s = best["step_s"] * b / best["batch"]  # linear in rows
            sampler_s = _timed(fns[name](b), p["steps"])
            out[case] = {"sampler": name, "batch": b, "sampler_s": sampler_s, "step_s": step_s,
                         "step_from": f"{best['attention']} at batch {best['batch']}",
                         "share": sampler_s / step_s}
        return out

    suite.run("sampler_share", share)

    def samplers() -> dict:
        b = p["sampler_batch"]
        return {name: {"batch": b, "per_s": b / _timed(fn(b), 2)} for name, fn in fns.items()}

    suite.run("samplers", samplers)
    best_attn = impls[-1]
    for case in ("cfg3f", "depth20"):
        suite.run(f"decode_{case}", lambda c=case: decode_section(c, best_attn, p, args.quick))
    suite.run("membership", lambda: membership_section(p["membership"]))

    def projection() -> dict:
        out = {}
        for run, (prefix, tokens) in PAPER_RUNS.items():
            rates = [r["tokens_per_s"] for k, r in suite.results.items()
                     if k.startswith(prefix) and r["status"] == "ok"]
            out[run] = ({"tokens": tokens, "tokens_per_s": max(rates),
                         "hours": tokens / max(rates) / 3600} if rates else
                        {"error": "no train step measured"})
        return out

    suite.run("projection", projection, always=True)  # arithmetic on what was measured

    def max_batch() -> dict:
        rows = []
        policies = args.max_batch_policies.split(",")
        # --quick: one case and policy, two probes (the search itself, not the table, is smoked)
        cases = ("cfg3f",) if args.quick else ("depth20", "cfg3f")
        for case in cases:
            for policy in policies[:1] if args.quick else policies:
                for a in impls:
                    if suite.left() > 0:
                        rows.append(mb.search(case, policy, a, [80, 141],
                                              start=p["depth_start"],
                                              max_probes=2 if args.quick else 3,
                                              quick=args.quick))
        return {"rows": rows}

    suite.run("max_batch", max_batch)
    print_table(suite.results)
    return suite.results


if __name__ == "__main__":
    main()
