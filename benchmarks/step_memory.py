"""Memory per device of the compiled train step, by XLA's own analysis (no parameters built).

  python benchmarks/step_memory.py [--devices 1,8,64] [--cases depth20,cfg3f]
                                   [--set optim.grad_accum=1 ...] [--json OUT.json]

For each case (a config file at its full recipe) and device count, compiles the real jitted
train step (sampler inside, donated state) against the abstract sharded state (`jax.eval_shape`:
no parameter is materialised) on fake CPU devices, one subprocess per count
(XLA_FLAGS=--xla_force_host_platform_device_count=N), and prints per device: arguments (the
state), temporaries, peak = arguments + outputs + temporaries - aliased (what the trainer's
check compares with the device), and whether the peak fits 80 GB and JAX's default GPU pool
(75 % of it, XLA_PYTHON_CLIENT_MEM_FRACTION). The mesh is data-parallel as far as the batch
allows (data = gcd(devices, micro-batch)), the remaining devices go to `tensor`.

XLA:CPU's analysis approximates a GPU's or TPU's: it computes bf16 matmuls in float32 and
materialises some broadcasts, so its temporaries usually overstate an accelerator's. For a TPU
figure, AOT-compile for a TPU topology (see /work/shared/NOTES.md).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CASES = {  # name: (config file stem, its argument)
    "depth20": ("igsm_depth20", None),  # GPT2-20-9 on iGSM-med: batch 512, T = 768
    "cfg3f": ("cfg", None),  # GPT-2 small on cfg3f: batch 96, T = 512
    "hard20": ("igsm", "preset=hard,model=20-9"),  # iGSM-hard: batch 256, T = 1024
}
DEFAULT_CASES = "depth20,cfg3f"
GB = 1e9
DEVICE_GB = 80.0
POOL = 0.75  # JAX preallocates this fraction of a GPU by default


def _config(stem: str, arg: str | None):
    path = ROOT / "configs" / f"{stem}.py"
    spec = importlib.util.spec_from_file_location(f"bench_cfg_{stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(arg)


def _parse(value: str):
    try:
        return json.loads(value)
    except json.JSONDecodeError:
        return value


def measure(case: str, sets: list[str]) -> dict:
    """One compile in this process (its device count is fixed by XLA_FLAGS)."""
    import jax

    from physics_lm.config import from_config_dict
    from physics_lm.train import memory
    from physics_lm.train.setup import build_experiment
    from physics_lm.train.trainer import jit_steps

    c = _config(*CASES[case])
    for s in sets:
        key, _, value = s.partition("=")
        section, _, name = key.partition(".")
        c[section][name] = _parse(value)
    n = jax.device_count()
    micro = c.train.batch_size // c.optim.grad_accum
    data = math.gcd(n, micro)
    c.mesh.update(data=data, fsdp=1, tensor=n // data)
    exp = build_experiment(from_config_dict(c), jax.devices())
    jit_train, _ = jit_steps(exp)
    t = time.perf_counter()
    with jax.set_mesh(exp.mesh):
        mem = memory.step_memory(jit_train.lower(exp.abstract_state).compile())
    return {"case": case, "devices": n, "mesh": dict(exp.mesh.shape),
            "batch": c.train.batch_size, "seq_len": exp.task.seq_len,
            "grad_accum": c.optim.grad_accum, "remat": c.model.remat,
            "rows_per_device": micro // data, "argument": mem.argument, "output": mem.output,
            "temp": mem.temp, "alias": mem.alias, "peak": mem.peak,
            "compile_s": time.perf_counter() - t}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--devices", default="1,8,64")
    p.add_argument("--cases", default=DEFAULT_CASES, help=f"some of {','.join(CASES)}")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="config override for every case, e.g. optim.grad_accum=1")
    p.add_argument("--json", default=None)
    p.add_argument("--worker", type=int, default=0, help=argparse.SUPPRESS)
    args = p.parse_args()
    cases = args.cases.split(",")
    if args.worker:
        for case in cases:
            print("ROW " + json.dumps(measure(case, args.set)), flush=True)
        return
    print("XLA:CPU compiled analysis, GB per device (an approximation of a GPU/TPU's); peak = "
          f"args + outputs + temp - aliased; fits {DEVICE_GB:.0f} GB / fits JAX's default GPU "
          f"pool ({POOL:.0%} of it)")
    print(f"{'case':>8} {'dev':>4} {'mesh d/f/t':>11} {'accum':>5} {'rows':>5} {'args':>7} "
          f"{'temp':>7} {'peak':>7} {'fits':>4} {'pool':>4} {'compile':>8}")
    rows = []
    for n in (int(v) for v in args.devices.split(",")):
        path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
        env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": path,
               "XLA_FLAGS": f"--xla_force_host_platform_device_count={n}"}
        cmd = [sys.executable, __file__, "--worker", str(n), "--cases", ",".join(cases),
               *(f"--set={s}" for s in args.set)]
        out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
        got = [json.loads(line[4:]) for line in out.stdout.splitlines() if line.startswith("ROW ")]
        if out.returncode or len(got) != len(cases):
            sys.exit(f"worker for {n} devices failed:\n{out.stderr[-3000:]}")
        for r in got:
            m = r["mesh"]
            fits = r["peak"] <= DEVICE_GB * GB
            pool = r["peak"] <= POOL * DEVICE_GB * GB
            yn = lambda b: "yes" if b else "no"
            print(f"{r['case']:>8} {n:>4} {m['data']:>4}/{m['fsdp']}/{m['tensor']:<4} "
                  f"{r['grad_accum']:>5} {r['rows_per_device']:>5} {r['argument'] / GB:>7.2f} "
                  f"{r['temp'] / GB:>7.2f} {r['peak'] / GB:>7.2f} {yn(fits):>4} {yn(pool):>4} "
                  f"{r['compile_s']:>7.0f}s", flush=True)
            rows.append({**r, "fits_80gb": fits, "fits_default_pool": pool})
    if args.json:
        Path(args.json).write_text(json.dumps({"backend": "cpu (fake devices)", "rows": rows},
                                              indent=2))


if __name__ == "__main__":
    main()
