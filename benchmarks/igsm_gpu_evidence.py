"""Part 2.1 evidence in one accelerator window: tiny iGSM trained to a budget, evaluated, probed.

  python benchmarks/igsm_gpu_evidence.py [--budget_s 240] [--batch 512] [--layers 8]
                                         [--out_dir DIR] [--eval_n 256] [--probe_steps 2000]
                                         [--quick]

The CPU evidence runs (README Results) train `configs/igsm.py:tiny` with 8 layers (ops <= 4,
4 heads of width 128, rotary, packed rows of 320 tokens) at batch 32, ~14M tokens an hour. Here the
same task and model train from scratch at `--batch` (bf16 compute) for `--budget_s` seconds of
steps: a 20-step calibration run measures the step time, then the run is sized to the budget (its
cosine schedule ends exactly there: warmup 5%, lr 3e-3 as on the CPU) and trained, and its final
params are evaluated greedily on `--eval_n` problems per cell: `op<=4` (test templates, in
distribution), `op=9` (out of distribution), `seen:op<=4` (training templates). Then the V-probe
(`mode=probe`, Part 2.1 §4) of the issue's evidence: `can_next` and `nece`, one rank-8 ΔE and
linear head per task, `--probe_steps` steps of 128 problems, fitted on the trained model and on
its random-init control alike, scored on test-template problems in distribution (`id`) and at
op = 9 (0 steps: no probe). Prints one table; writes `evidence.json` (device, steps, tokens,
tokens/s, held-out loss, accuracy per cell with its 95% interval and by op, probe accuracy
trained / control / majority) and the eval's and the probe's files into `--out_dir` after each
phase, so a run cut short still leaves what it measured. Wall time: two train-step compiles, the
budget, the cells' sampler compiles and decoding, the probe's compiles and steps (on a CPU the
cells take minutes).

The config is a plain dict (the GPU image has no ml_collections; `test_gpu_evidence.py` checks it
against configs/igsm.py:tiny). Runs from a bare checkout. `--quick`: a 2-layer width-32 model,
batch 8, a 3 s budget, 4 problems of `seen:op<=4`, 3 probe steps of 8 problems: the CPU smoke run
the test keeps working.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE)]  # the repo (without an install) and the suite

from accelerator_suite import device_info  # noqa: E402  (card, driver, peak: as the suite's)

CELLS = ("op<=4", "op=9", "seen:op<=4")
QUICK_CELLS = ("seen:op<=4",)
PROBE_TASKS = ("can_next", "nece")  # the evidence: "can_next/nece far above the control"


def run_config(*, layers: int, batch: int, num_steps: int, quick: bool, eval_n: int,
               cells: tuple[str, ...], probe_steps: int = 1) -> dict[str, Any]:
    """configs/igsm.py:tiny with `layers` at `batch`, its schedule over `num_steps`."""
    return {
        "seed": 0,
        "task": {"name": "igsm", "preset": "custom", "max_op": 4, "max_edge": 6, "seq_len": 320,
                 "packing": "pack", "fmt": "pq", "split": "train", "train_bins": list(range(16)),
                 "loss_on": "solution", "groups": 1},
        "model": {"num_layers": layers, "num_heads": 2 if quick else 4,
                  "d_model": 32 if quick else 128, "max_len": 320, "pos": "rotary",
                  "compute_dtype": "float32" if quick else "bfloat16"},
        "optim": {"lr": 3e-3, "b2": 0.98, "weight_decay": 0.05, "schedule": "cosine",
                  "warmup_steps": max(1, num_steps // 20), "final_lr_frac": 0.01,
                  "grad_clip": 1.0},
        "train": {"batch_size": batch, "num_steps": num_steps, "log_every": 5 if quick else 50,
                  "eval_every": num_steps, "eval_batches": 1 if quick else 8,
                  "checkpoint_every": num_steps, "keep_checkpoints": 1},
        "eval": {"n": eval_n, "cells": list(cells), "decode_batch": min(eval_n, 256)},
        "probe": probe_config(probe_steps, quick),
    }


def probe_config(steps: int, quick: bool) -> dict[str, Any]:
    """The V-probe of the evidence: the paper's recipe (lr 0.002, linear decay, wd 0.01, one ΔE
    per task, 10 queries per problem) at `steps` steps of 128 problems, no depth study. The
    section is validated (steps >= 1) with every config, also when `--probe_steps 0` skips it."""
    return {"steps": max(steps, 1), "batch_size": 8 if quick else 128, "lr": 0.002,
            "schedule": "linear", "weight_decay": 0.01, "eval_batches": 1 if quick else 8,
            "tasks": list(PROBE_TASKS), "queries": 3 if quick else 10, "delta": "per_task",
            "ood_ops": [9], "depth": False, "control": True, "mistakes": 0,
            "log_every": max(1, steps // 10)}


def _write(out_dir: Path, result: dict[str, Any]) -> None:
    (out_dir / "evidence.json").write_text(json.dumps(result, indent=2, default=str) + "\n")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--budget_s", type=float, default=None, help="seconds of training steps")
    ap.add_argument("--batch", type=int, default=None)
    ap.add_argument("--layers", type=int, default=None)
    ap.add_argument("--eval_n", type=int, default=None, help="problems per cell")
    ap.add_argument("--probe_steps", type=int, default=None,
                    help="V-probe steps per task and model (0: no probe)")
    ap.add_argument("--out_dir", type=Path, default=Path("."))
    ap.add_argument("--workdir", type=Path, default=None, help="default: a temporary folder")
    ap.add_argument("--step_s", type=float, default=None,
                    help="the step time if known (e.g. from the accelerator suite): no calibration")
    ap.add_argument("--quick", action="store_true")
    a = ap.parse_args(argv)
    quick = a.quick
    budget = a.budget_s or (3.0 if quick else 240.0)
    batch, layers = a.batch or (8 if quick else 512), a.layers or (2 if quick else 8)
    eval_n, cells = a.eval_n or (4 if quick else 256), QUICK_CELLS if quick else CELLS
    probe_steps = a.probe_steps if a.probe_steps is not None else (3 if quick else 2000)
    if probe_steps < 0:
        ap.error(f"--probe_steps={probe_steps}: must be >= 0")
    for name, v in (("budget_s", budget), ("batch", batch), ("layers", layers),
                    ("eval_n", eval_n), ("step_s", a.step_s or 1)):
        if v <= 0:
            ap.error(f"--{name}={v}: must be > 0")
    a.out_dir.mkdir(parents=True, exist_ok=True)
    work = a.workdir or Path(tempfile.mkdtemp(prefix="igsm_evidence_"))

    from physics_lm.analysis import run_analysis
    from physics_lm.config import from_config_dict
    from physics_lm.train.trainer import train_and_evaluate

    def cfg(num_steps: int, **over: Any):
        d = run_config(layers=layers, batch=batch, num_steps=num_steps, quick=quick,
                       eval_n=eval_n, cells=cells, probe_steps=probe_steps)
        for section, values in over.items():
            d[section] = {**d[section], **values} if isinstance(values, dict) else values
        return from_config_dict(d)

    result: dict[str, Any] = {"device": device_info(), "budget_s": budget, "batch": batch,
                              "layers": layers, "seq_len": 320}
    t = time.perf_counter()
    calib_steps = 4 if quick else 20
    if a.step_s:
        step_s = a.step_s
    else:
        probe = train_and_evaluate(
            cfg(10**6, train={"eval_batches": 0, "log_every": calib_steps // 2}),
            work / "calibration", stop_at_step=calib_steps)
        step_s = probe["step_time_s"]
    num_steps = max(10, int(budget / step_s))
    result["calibration"] = {"step_s": step_s, "measured": not a.step_s,
                             "wall_s": time.perf_counter() - t, "num_steps": num_steps}
    _write(a.out_dir, result)
    print(f"calibration: {step_s * 1e3:.1f} ms per step of {batch} x 320 tokens -> "
          f"{num_steps} steps for {budget:.0f} s", flush=True)

    t = time.perf_counter()
    out = train_and_evaluate(cfg(num_steps), work / "run")
    train_s = time.perf_counter() - t
    tokens = num_steps * batch * 320
    result["train"] = {"steps": num_steps, "tokens": tokens, "wall_s": train_s,
                       "tokens_per_s_last": out.get("tokens_per_s"),
                       "loss": out.get("loss"), "eval_loss": out.get("eval_loss")}
    _write(a.out_dir, result)

    t = time.perf_counter()
    run_analysis(cfg(num_steps, mode="eval"), work / "run")
    doc = json.loads((work / "run" / "eval" / "igsm.json").read_text())
    result["eval"] = {"wall_s": time.perf_counter() - t, "cells": doc["cells"],
                      "throughput": doc.get("throughput")}
    for name in ("igsm.json", "igsm_generations.jsonl"):
        shutil.copy(work / "run" / "eval" / name, a.out_dir / name)
    _write(a.out_dir, result)
    if probe_steps:
        t = time.perf_counter()
        run_analysis(cfg(num_steps, mode="probe"), work / "run")
        doc = json.loads((work / "run" / "probe" / "igsm.json").read_text())
        result["probe"] = {"wall_s": time.perf_counter() - t, "steps": probe_steps,
                           "results": doc["results"], "final_loss": doc["final_loss"]}
        shutil.copy(work / "run" / "probe" / "igsm.json", a.out_dir / "probe_igsm.json")
        _write(a.out_dir, result)
    print(table(result))
    return result


def _f(v: float | None, digits: int = 3) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def table(r: dict[str, Any]) -> str:
    tr = r["train"]
    lines = [f"device: {r['device']['card']} ({r['device']['backend']}, jax "
             f"{r['device']['jax']}); {r['layers']} layers, batch {r['batch']} x 320",
             f"trained {tr['steps']} steps = {tr['tokens'] / 1e6:.1f}M tokens in "
             f"{tr['wall_s']:.0f} s; loss {tr['loss']:.4f}, held-out (test templates) "
             f"{tr['eval_loss']:.4f}",
             "", "| cell | n | accuracy [95%] | by op |", "|---|---|---|---|"]
    for name, m in r["eval"]["cells"].items():
        by_op = ", ".join(f"{op}: {b['accuracy']:.2f}" for op, b in m["by_op"].items())
        lines.append(f"| {name} | {m['n']} | {m['accuracy']:.3f} [{m['acc_lo']:.3f}, "
                     f"{m['acc_hi']:.3f}] | {by_op} |")
    if "probe" in r:
        lines += ["", f"V-probe ({r['probe']['steps']} steps per task and model): accuracy "
                  "trained / random-init control / majority (positives, negatives trained)",
                  "| task | split | trained | control | majority | trained pos / neg |",
                  "|---|---|---|---|---|---|"]
        for task, splits in r["probe"]["results"].items():
            for split, c in splits.items():
                pt, pc = c["trained"], c.get("control", {})
                lines.append(f"| {task} | {split} | {_f(pt['acc'])} | {_f(pc.get('acc'))} | "
                             f"{_f(c['majority'])} | {_f(pt.get('acc_pos'), 2)} / "
                             f"{_f(pt.get('acc_neg'), 2)} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
