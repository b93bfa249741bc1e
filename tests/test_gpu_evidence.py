"""benchmarks/igsm_gpu_evidence.py: its config is configs/igsm.py:tiny's, and `--quick` runs every
phase on a CPU (train sized to a budget, eval, files in --out_dir)."""

import json
import math
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCH))

import igsm_gpu_evidence as ev  # noqa: E402

from physics_lm.config import from_config_dict  # noqa: E402
from physics_lm.data.registry import build_task  # noqa: E402


def test_the_config_is_the_tiny_cpu_runs(load_config):
    """Same task, model shape and optimizer as the CPU evidence runs; only the batch, the length
    of the schedule and the compute dtype differ (bf16 on the accelerator)."""
    c = load_config("igsm", "tiny")
    c.model.num_layers = 8
    tiny = from_config_dict(c)
    mine = from_config_dict(ev.run_config(layers=8, batch=512, num_steps=1000, quick=False,
                                          eval_n=256, cells=ev.CELLS))
    assert build_task(mine.task) == build_task(tiny.task)
    for key in ("num_layers", "num_heads", "d_model", "max_len", "pos", "tie_embeddings"):
        assert getattr(mine.model, key) == getattr(tiny.model, key), key
    for key in ("lr", "b1", "b2", "weight_decay", "schedule", "final_lr_frac", "grad_clip"):
        assert getattr(mine.optim, key) == getattr(tiny.optim, key), key
    assert mine.model.compute_dtype == "bfloat16" and mine.train.batch_size == 512
    assert set(ev.CELLS) <= set(mine.eval.cells) and mine.optim.warmup_steps == 50


def test_quick_run_trains_to_the_budget_and_evaluates(tmp_path):
    out = tmp_path / "out"
    done = subprocess.run([sys.executable, str(BENCH / "igsm_gpu_evidence.py"), "--quick",
                           "--step_s", "0.3", "--out_dir", str(out),
                           "--workdir", str(tmp_path / "work")],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    r = json.loads((out / "evidence.json").read_text())
    assert r["calibration"] == {**r["calibration"], "num_steps": 10, "measured": False}
    assert r["train"]["steps"] == 10 and r["train"]["tokens"] == 10 * 8 * 320
    vocab = from_config_dict(ev.run_config(layers=2, batch=8, num_steps=10, quick=True,
                                           eval_n=4, cells=ev.QUICK_CELLS))
    assert r["train"]["loss"] < math.log(build_task(vocab.task).vocab_size)  # below uniform
    cell = r["eval"]["cells"]["seen:op<=4"]
    assert cell["n"] == 4 and sum(b["n"] for b in cell["by_op"].values()) == 4
    rows = (out / "igsm_generations.jsonl").read_text().splitlines()
    assert len(rows) == 4 and json.loads((out / "igsm.json").read_text())["cells"] == r["eval"][
        "cells"]
    assert "| seen:op<=4 | 4 |" in done.stdout
    # the V-probe phase: both tasks, in and out of distribution, trained and control, its file kept
    probe = r["probe"]["results"]
    assert set(probe) == set(ev.PROBE_TASKS) and r["probe"]["steps"] == 3
    for task in ev.PROBE_TASKS:
        assert set(probe[task]) == {"id", "op=9"}
        for cell in probe[task].values():
            assert {"trained", "control", "majority"} <= set(cell)
            assert cell["trained"]["n"] == cell["control"]["n"] > 0
            assert 0.0 <= cell["trained"]["acc"] <= 1.0
    assert json.loads((out / "probe_igsm.json").read_text())["results"] == probe
    assert "| can_next | id |" in done.stdout and "| nece | op=9 |" in done.stdout


def test_probe_steps_zero_skips_the_probe_and_a_negative_count_is_refused(tmp_path):
    bad = subprocess.run([sys.executable, str(BENCH / "igsm_gpu_evidence.py"), "--quick",
                          "--probe_steps", "-1", "--out_dir", str(tmp_path)],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "--probe_steps=-1" in bad.stderr
    cfg = from_config_dict(ev.run_config(layers=8, batch=512, num_steps=100, quick=False,
                                         eval_n=256, cells=ev.CELLS, probe_steps=2000))
    assert cfg.probe.steps == 2000 and cfg.probe.tasks == ev.PROBE_TASKS and not cfg.probe.depth
