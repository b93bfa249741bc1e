"""benchmarks/accelerator_suite.py --quick keeps working on CPU; max_batch's search and cases;
the train-step profile attributes the step's ops to their sources."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCH))

import max_batch as mb  # noqa: E402
import suite_table  # noqa: E402
import train_step_profile as tsp  # noqa: E402


def test_largest_batch_search_converges_on_a_linear_peak():
    GB = 1e9
    peak = lambda b: {"peak": 3e9 + 0.37e9 * b, "temp": 0.5e9 * b, "state": 3e9}
    found, probes = mb.largest_batch(peak, [80 * GB, 141 * GB], max_probes=8)
    assert found == {80 * GB: (208, "compiled"), 141 * GB: (368, "compiled")}
    assert len(probes) <= 6
    found, probes = mb.largest_batch(peak, [80 * GB], max_probes=1)  # one probe: the line's
    assert found[80 * GB][1] == "fit" and list(probes) == [8]


@pytest.mark.parametrize("case,stem", [("depth20", "igsm_depth20"), ("cfg3f", "cfg")])
def test_cases_mirror_the_config_files(load_config, case, stem):
    c = load_config(stem)
    mine = mb.case_config(case, 8)
    for key in ("num_layers", "num_heads", "d_model", "pos", "compute_dtype"):
        assert mine["model"][key] == c.model[key], key
    for key, value in mine["task"].items():
        assert c.task[key] == value, key


def test_quick_suite_runs_every_section(tmp_path):
    """The whole --quick suite: about a minute on 2 CPU cores."""
    out = tmp_path / "suite.json"
    env = {**os.environ, "PYTHONPATH": str(BENCH.parent)}
    proc = subprocess.run([sys.executable, str(BENCH / "accelerator_suite.py"), "--quick",
                           "--budget_s", "900", "--out", str(out)],
                          env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(out.read_text())
    assert set(got) == {"device", "train_cfg3f_xla", "train_depth20_xla", "sampler_share",
                        "samplers", "decode_cfg3f", "decode_depth20", "membership",
                        "projection", "max_batch"}
    bad = {k: v.get("error") for k, v in got.items() if v["status"] != "ok"}
    assert not bad, bad
    assert {"card", "jax", "driver", "peak_bf16_flops"} <= set(got["device"])
    assert got["train_cfg3f_xla"]["tokens_per_s"] > 0 and got["membership"]["all_members"]
    assert got["train_cfg3f_xla"]["kernel_calls"] == 0  # XLA attention: no fused kernel
    assert 0 < got["sampler_share"]["depth20"]["share"] < 1
    assert got["projection"]["part1_cfg3f"]["hours"] > 0
    assert got["max_batch"]["rows"] and "train_depth20_xla" in proc.stdout  # the table


def test_only_skips_the_other_sections(tmp_path):
    out = tmp_path / "suite.json"
    env = {**os.environ, "PYTHONPATH": str(BENCH.parent)}
    proc = subprocess.run([sys.executable, str(BENCH / "accelerator_suite.py"), "--quick",
                           "--out", str(out), "--only", "device,projection"],
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(out.read_text())
    assert got["device"]["status"] == "ok"
    assert got["train_depth20_xla"] == {"status": "skipped", "reason": "not in --only"}
    assert got["projection"]["part1_cfg3f"] == {"error": "no train step measured"}
    assert "not in --only" in proc.stdout


def test_train_step_profile_attributes_ops_to_their_sources():
    exp, compiled, state = tsp.compiled_step(2, 32, 32, 2, 2, "float32")
    sources = tsp.op_sources(compiled.as_text())
    events, wall = tsp.profile(compiled, state, 2, exp.mesh)
    assert events and wall > 0
    seconds = {}
    for op, sec in events:
        cat, direction = tsp.categorize(sources.get(op, ("", ""))[0])
        seconds[cat, direction] = seconds.get((cat, direction), 0.0) + sec
    for cat in ("attention projections", "attention q.k and p.v", "MLP", "layer norms"):
        assert seconds.get((cat, "fwd"), 0) > 0 and seconds.get((cat, "bwd"), 0) > 0, (cat, seconds)
    assert seconds.get(("sampler", ""), 0) > 0, seconds
    named = sum(v for (cat, _), v in seconds.items() if cat != tsp.REST)
    assert named > 0.5 * sum(seconds.values())  # the rules still match jax's op_name scheme


def test_train_rows_say_whether_the_requested_kernel_ran():
    """A GPU run's table names the cuDNN kernel calls it compiled, and says so loudly when a
    requested kernel is absent although nothing logged a fallback."""
    row = dict(mfu=0.5, batch=96, seq_len=512, tokens_per_s=1e6, step_s=0.05, compile_s=30,
               fell_back=[], attention="cudnn")
    cudnn = lambda calls: suite_table.summary("train_cfg3f_cudnn", {**row, "kernel_calls": calls})
    assert "36 kernel calls" in cudnn(36) and "NO kernel call" in cudnn(0)
    xla = suite_table.summary("train_cfg3f_xla", {**row, "attention": "xla", "kernel_calls": 0})
    assert "kernel" not in xla and "MFU 50.0%" in xla
