"""KV-cache decoding vs full recompute: seconds to generate N tokens (default 512) per model.

Usage: python benchmarks/decode.py [--models small,gpt2] [--batch 4] [--new 512]
                                   [--ref-steps small=0,gpt2=4] [--json OUT]

Both samplers are `physics_lm.eval.decode.generate` (one jit, a `lax.while_loop` over steps), from
BOS, never stopping at EOS, with random-init params (speed does not depend on the weights). The
peer is the recompute sampler: every step runs the full forward of the fixed (1 + N)-token buffer,
as a static-shape jitted decoder must. A growing-length recompute would do about half the work,
so the honest floor of the ratio is half of what is printed. `--ref-steps m=K` stops the peer
after K steps (a step hook marks every row done) and scales its time by N / K: its steps all cost
the same, so this estimates the full run without waiting for it (marked "extrap." in the table).
Compile time is excluded (ahead-of-time compile first). Wall and process-CPU seconds are both
given: the shared 2-core CPU box is loaded, and CPU seconds are the fairer per-core figure there.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp

from physics_lm.config import ModelConfig
from physics_lm.eval.decode import DecodeState, FnHook, generate
from physics_lm.models.gpt2 import GPT2

MODELS = {
    "small": dict(num_layers=4, num_heads=4, d_model=128),
    "gpt2": dict(num_layers=12, num_heads=12, d_model=768),  # GPT-2 small's shape
}


def _stop_after(k: int):
    def hook(state: DecodeState) -> DecodeState:
        return state._replace(done=state.done | (state.step >= k))
    return hook


def _time(cfg: ModelConfig, params, batch: int, new: int, use_cache: bool, stop: int
          ) -> tuple[float, float]:
    prompt = jnp.full((batch, 1), 9, jnp.int32)
    plen = jnp.ones((batch,), jnp.int32)
    kw = dict(max_new=new, eos_id=-1, use_cache=use_cache,
              hook=FnHook(_stop_after(stop)) if stop else None)
    compiled = generate.lower(cfg, params, jax.random.key(0), prompt, plen, **kw).compile()
    cpu0, wall0 = time.process_time(), time.perf_counter()
    out = compiled(params, jax.random.key(1), prompt, plen)
    jax.block_until_ready(out)
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    steps = int(jnp.max(out.length)) - 1
    assert steps == (stop or new), (steps, stop, new)
    return wall * new / steps, cpu * new / steps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="small,gpt2")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--new", type=int, default=512)
    ap.add_argument("--ref-steps", default="small=0,gpt2=4",
                    help="model=K: time K recompute steps and extrapolate (0 = all)")
    ap.add_argument("--json", type=Path, default=None, help="also write the table as JSON")
    args = ap.parse_args()
    ref_steps = {k: int(v) for k, v in (x.split("=") for x in args.ref_steps.split(",") if x)}
    rows = []
    for name in args.models.split(","):
        cfg = ModelConfig(**MODELS[name], vocab_size=16, max_len=args.new + 1, pos="rotary")
        params = nn.unbox(GPT2(cfg).init(jax.random.key(0), jnp.zeros((1, 8), jnp.int32))
                          ["params"])
        k = ref_steps.get(name, 0)
        c_wall, c_cpu = _time(cfg, params, args.batch, args.new, True, 0)
        r_wall, r_cpu = _time(cfg, params, args.batch, args.new, False, k)
        rows.append({"model": name, "layers": cfg.num_layers, "d_model": cfg.d_model,
                     "batch": args.batch, "new_tokens": args.new,
                     "recompute_s": r_wall, "recompute_cpu_s": r_cpu,
                     "recompute_extrapolated_from_steps": k or None,
                     "cached_s": c_wall, "cached_cpu_s": c_cpu,
                     "speedup_wall": r_wall / c_wall, "speedup_cpu": r_cpu / c_cpu,
                     "cached_tokens_per_s": args.batch * args.new / c_wall})
        print(f"done {name}", flush=True)
    dev = jax.devices()[0]
    print(f"\ndevice: {dev.platform} ({dev.device_kind}), {jax.device_count()} device(s)")
    head = (f"{'model':<7}{'L':>3}{'D':>5}{'B':>3}{'new':>5} | {'recompute s (cpu)':>22} | "
            f"{'KV cache s (cpu)':>17} | {'speed-up wall (cpu)':>20} | {'cached tok/s':>12}")
    print(head + "\n" + "-" * len(head))
    for r in rows:
        ex = " extrap." if r["recompute_extrapolated_from_steps"] else ""
        print(f"{r['model']:<7}{r['layers']:>3}{r['d_model']:>5}{r['batch']:>3}"
              f"{r['new_tokens']:>5} | {r['recompute_s']:>7.2f} ({r['recompute_cpu_s']:.2f})"
              f"{ex:>8} | {r['cached_s']:>7.2f} ({r['cached_cpu_s']:>6.2f}) | "
              f"{r['speedup_wall']:>9.1f}x ({r['speedup_cpu']:.1f}x) | "
              f"{r['cached_tokens_per_s']:>12.0f}")
    if args.json:
        args.json.write_text(json.dumps({"device": str(dev.device_kind), "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
