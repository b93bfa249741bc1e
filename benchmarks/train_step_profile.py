"""Where a train step's time goes: the real jitted step, profiled, its ops grouped by what they do.

  python benchmarks/train_step_profile.py [--layers 4] [--width 256] [--seq_len 512] [--batch 8]
                                          [--steps 5] [--dtype float32] [--top 12] [--json OUT]

It traces `--steps` calls of the compiled train step (`train_step.compiled_step`: cfg3f, absolute
positions, the sampler inside the step) with `jax.profiler`, reads back the per-HLO-op events
(`ProfileData`: one event per executed op, with its `hlo_op` name), and maps each op to its
source through the `op_name` metadata of the compiled HLO: the sampler, the attention's
projections, its q·k and p·v contractions, the rest of the attention (mask, softmax, rotary),
the MLP, layer norms, embedding and logits, residual adds and activations, and what is left
(loss, optimizer, key derivation). Forward and backward are told apart by `transpose(jvp(...))`.
A second table groups by kind of op: matmuls, layout copies (copy/transpose), the rest.

Op time is summed over threads, so it can exceed the wall time when ops overlap; the shares are
of the summed op time. `matmul FLOPs at peak` is the model's 6N + attention FLOPs at the measured
f32 matmul peak (`train_step.measured_matmul_peak`): what a step would take if it were all
matmul at peak.
"""

from __future__ import annotations

import argparse
import collections
import glob
import json
import re
import tempfile
import time

import jax
from train_step import compiled_step, measured_matmul_peak

from physics_lm.train import metrics as metrics_lib

# (category, substrings of the op's op_name metadata); the first rule that matches wins.
RULES = (
    ("sampler", ("_sample_jit", "CFGTask", "IGSMTask", "derive_from_tables")),
    ("attention projections", ("btd,dnhk->btnhk", "bthk,hkd->btd")),
    ("attention q.k and p.v", ("bthk,bshk->bhts", "bhts,bshk->bthk")),
    ("attention mask/softmax/rotary", ("/attn/",)),
    ("MLP", ("/fc/", "/proj/")),
    ("layer norms", ("/ln_",)),
    ("embedding and logits", ("/wte", "/wpe")),
    ("residual and activations", ("GPT2",)),
)
REST = "loss, optimizer, keys"
_HLO_LINE = re.compile(r'^\s*(?:ROOT )?%(\S+) = (.*?)metadata=\{op_name="([^"]*)"')


def op_sources(hlo_text: str) -> dict[str, tuple[str, str]]:
    """HLO instruction name -> (its op_name metadata, the instruction's text before it)."""
    out = {}
    for line in hlo_text.splitlines():
        m = _HLO_LINE.match(line)
        if m:
            out[m.group(1)] = (m.group(3), m.group(2))
    return out


def categorize(op_name: str) -> tuple[str, str]:
    """(category, 'fwd' | 'bwd' | '') of an op from its op_name metadata."""
    direction = "bwd" if "transpose(jvp(" in op_name else "fwd" if "jvp(" in op_name else ""
    for category, needles in RULES:
        if any(n in op_name for n in needles):
            return category, direction
    return REST, direction


def kind(hlo_op: str, text: str) -> str:
    if hlo_op.startswith(("ynn_fusion", "dot", "onednn", "convolution")) or " dot(" in text:
        return "matmul"
    if hlo_op.startswith(("copy", "transpose")) or "transpose" in hlo_op:
        return "layout copy"
    return "other"


def profile(compiled, state, steps: int, mesh) -> tuple[list[tuple[str, float]], float]:
    """[(hlo_op, seconds)] of the step's op events in `steps` traced calls (other programs that
    ran meanwhile are left out), and the wall seconds per step."""
    module = re.match(r"HloModule (\S+?),", compiled.as_text()).group(1)
    with jax.set_mesh(mesh):
        state, m = compiled(state)  # warm-up outside the trace
        jax.block_until_ready(m)
        with tempfile.TemporaryDirectory() as tmp:
            with jax.profiler.trace(tmp):
                t = time.perf_counter()
                for _ in range(steps):
                    state, m = compiled(state)
                jax.block_until_ready(m)
                wall = (time.perf_counter() - t) / steps
            path = sorted(glob.glob(f"{tmp}/plugins/profile/*/*.xplane.pb"))[-1]
            data = jax.profiler.ProfileData.from_file(path)
    events = []
    for plane in data.planes:
        for line in plane.lines:
            for e in line.events:
                stats = dict(e.stats)
                if "hlo_op" in stats and stats.get("hlo_module") == module:
                    events.append((str(stats["hlo_op"]), e.duration_ns * 1e-9))
    return events, wall


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--width", type=int, default=256)
    ap.add_argument("--seq_len", type=int, default=512)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    ap.add_argument("--top", type=int, default=12, help="the slowest single ops to list")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    exp, compiled, state = compiled_step(args.layers, args.width, args.seq_len, args.batch,
                                         args.steps, args.dtype)
    sources = op_sources(compiled.as_text())
    events, wall = profile(compiled, state, args.steps, exp.mesh)
    if not events:
        raise SystemExit("the profiler recorded no per-op events on this backend")
    by_cat: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    by_kind, by_op = collections.Counter(), collections.Counter()
    unknown = 0.0
    for op, sec in events:
        name, text = sources.get(op, ("", ""))
        unknown += 0.0 if op in sources else sec
        cat, direction = categorize(name)
        by_cat[cat][direction or "other"] += sec / args.steps
        by_kind[kind(op, text)] += sec / args.steps
        by_op[(op, name)] += sec / args.steps
    total = sum(by_kind.values())
    peak = measured_matmul_peak()
    flops = metrics_lib.train_flops_per_token(exp.model.cfg, args.seq_len) * (
        args.batch * args.seq_len)
    print(f"\ndevice: {jax.devices()[0].device_kind}; GPT-2 {args.layers}x{args.width}, "
          f"T={args.seq_len}, batch {args.batch}, {args.dtype}, {args.steps} traced steps")
    print(f"wall {wall * 1e3:.1f} ms/step, summed op time {total * 1e3:.1f} ms/step; matmul FLOPs "
          f"at the measured peak ({peak / 1e9:.0f} GFLOP/s) {flops / peak * 1e3:.1f} ms/step "
          f"({flops / peak / wall:.0%} of the wall time)")
    head = f"{'category':<30}| {'fwd ms':>8} | {'bwd ms':>8} | {'other':>8} | {'share':>6}"
    print(head + "\n" + "-" * len(head))
    rows = []
    for cat in [c for c, _ in RULES] + [REST]:
        c = by_cat.get(cat, collections.Counter())
        share = sum(c.values()) / total
        rows.append({"category": cat, "fwd_s": c["fwd"], "bwd_s": c["bwd"],
                     "other_s": c["other"], "share": share})
        print(f"{cat:<30}| {c['fwd'] * 1e3:>8.2f} | {c['bwd'] * 1e3:>8.2f} | "
              f"{c['other'] * 1e3:>8.2f} | {share:>6.1%}")
    print("\nby kind: " + ", ".join(f"{k} {v * 1e3:.1f} ms ({v / total:.0%})"
                                    for k, v in by_kind.most_common()))
    if unknown:
        print(f"ops without HLO metadata: {unknown / args.steps * 1e3:.2f} ms/step")
    print(f"\nslowest {args.top} ops (ms/step, op_name):")
    for (op, name), sec in by_op.most_common(args.top):
        print(f"  {sec * 1e3:7.2f}  {op:<34} {name[:90]}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "wall_s": wall, "op_s": total, "peak_flops": peak,
                       "flops_per_step": flops, "categories": rows,
                       "kinds": dict(by_kind)}, f, indent=1)


if __name__ == "__main__":
    main()
