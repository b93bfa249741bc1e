"""Training-step throughput: physics_lm (sampler inside the jitted step) vs Hugging Face GPT-2.

  python benchmarks/train_step.py [--sizes 4x256,12x768] [--seq_len 512] [--batch 8]
                                  [--steps 5] [--remat] [--json OUT.json] [--no-peer]

For each model size it times the real jitted train step (on-device CFG sampler, forward,
backward, AdamW update) after one warm-up call, and, where torch + transformers are installed,
the same-shape `GPT2LMHeadModel` step (AdamW, fixed random batch) as the peer. MFU uses the
device's published bf16 peak where known (GPUs/TPUs); elsewhere it is reported against a
*measured* peak (a large float32 matmul on this backend), and labelled so.
"""

from __future__ import annotations

import argparse
import json
import time

import jax
import jax.numpy as jnp
import numpy as np

from physics_lm.config import from_config_dict
from physics_lm.train import metrics as metrics_lib
from physics_lm.train.setup import build_experiment, fresh_state
from physics_lm.train.trainer import jit_steps


def measured_matmul_peak(n: int = 2048, reps: int = 5) -> float:
    a = jnp.ones((n, n), jnp.float32)
    f = jax.jit(lambda x: x @ x)
    f(a).block_until_ready()
    t = time.perf_counter()
    for _ in range(reps):
        out = f(a)
    out.block_until_ready()
    return 2 * n**3 * reps / (time.perf_counter() - t)


def compiled_step(layers: int, width: int, seq_len: int, batch: int, steps: int, dtype: str,
                  remat: bool = False):
    """(experiment, compiled train step, fresh state): the real step of a cfg3f run, T=seq_len."""
    cfg = from_config_dict({
        "task": {"name": "cfg", "grammar": "cfg3f", "seq_len": seq_len},
        "model": {"num_layers": layers, "num_heads": max(width // 64, 1), "d_model": width,
                  "max_len": seq_len, "pos": "absolute", "compute_dtype": dtype,
                  "remat": remat},
        "optim": {"warmup_steps": 1},
        "train": {"batch_size": batch, "num_steps": steps + 1},
        "mesh": {"data": 1},
    })
    exp = build_experiment(cfg, jax.devices()[:1])
    state = fresh_state(exp)
    train, _ = jit_steps(exp)
    with jax.set_mesh(exp.mesh):
        return exp, train.lower(state).compile(), state


def ours(layers: int, width: int, seq_len: int, batch: int, steps: int, dtype: str,
         remat: bool = False) -> dict:
    exp, train, state = compiled_step(layers, width, seq_len, batch, steps, dtype, remat)
    with jax.set_mesh(exp.mesh):
        state, m = train(state)
        jax.block_until_ready(m)
        t = time.perf_counter()
        for _ in range(steps):
            state, m = train(state)
        jax.block_until_ready(m)
    dt = (time.perf_counter() - t) / steps
    flops = metrics_lib.train_flops_per_token(exp.model.cfg, seq_len) * batch * seq_len
    return {"step_s": dt, "tokens_per_s": batch * seq_len / dt, "flops_per_step": flops,
            "params": metrics_lib.count_params(state.params)}


def peer(layers: int, width: int, seq_len: int, batch: int, steps: int, vocab: int) -> dict | None:
    try:
        import torch
        from transformers import GPT2Config, GPT2LMHeadModel
    except ImportError:
        return None
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(n_layer=layers, n_embd=width, n_head=max(width // 64, 1),
                                       n_positions=seq_len, vocab_size=vocab))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-4, betas=(0.9, 0.98), weight_decay=0.1)
    x = torch.randint(0, vocab, (batch, seq_len))

    def step() -> None:
        loss = model(input_ids=x, labels=x).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)

    step()
    t = time.perf_counter()
    for _ in range(steps):
        step()
    dt = (time.perf_counter() - t) / steps
    return {"step_s": dt, "tokens_per_s": batch * seq_len / dt}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="2x128,4x256", help="LAYERSxWIDTH,... e.g. 12x768")
    p.add_argument("--seq_len", type=int, default=512)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    p.add_argument("--remat", action="store_true", help="model.remat (recompute each block)")
    p.add_argument("--no-peer", action="store_true")
    p.add_argument("--json", default=None)
    args = p.parse_args()
    published = metrics_lib.peak_flops_per_device()
    peak = published or measured_matmul_peak()
    peak_label = "published bf16 peak" if published else "measured f32 matmul peak"
    device = jax.devices()[0].device_kind
    print(f"device: {device} ({jax.default_backend()}), MFU vs {peak_label} {peak / 1e12:.2f} "
          f"TFLOP/s, T={args.seq_len}, batch={args.batch}, dtype={args.dtype}, remat={args.remat}")
    header = (f"{'model':>10} {'params':>11} {'ours tok/s':>11} {'step s':>8} {'MFU':>6} "
              f"{'peer tok/s':>11} {'ratio':>6}")
    print(header)
    rows = []
    for size in args.sizes.split(","):
        layers, width = (int(v) for v in size.split("x"))
        us = ours(layers, width, args.seq_len, args.batch, args.steps, args.dtype, args.remat)
        them = None if args.no_peer else peer(layers, width, args.seq_len, args.batch, args.steps,
                                              vocab=6)
        mfu = us["flops_per_step"] / us["step_s"] / peak
        ratio = us["tokens_per_s"] / them["tokens_per_s"] if them else float("nan")
        peer_s = f"{them['tokens_per_s']:>11,.0f}" if them else f"{'n/a':>11}"
        print(f"{size:>10} {us['params']:>11,} {us['tokens_per_s']:>11,.0f} "
              f"{us['step_s']:>8.3f} {mfu:>6.1%} {peer_s} {ratio:>6.2f}")
        rows.append({"size": size, **us, "mfu": mfu, "peer": them, "ratio": ratio})
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"device": device, "peak_flops": peak, "peak_label": peak_label,
                       "args": vars(args), "rows": rows}, f, indent=2,
                      default=lambda x: float(x) if isinstance(x, np.floating) else str(x))


if __name__ == "__main__":
    main()
