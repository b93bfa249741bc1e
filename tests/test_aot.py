"""The AOT fit check: the real train step compiled for a TPU topology (libtpu, no TPU) and for
fake CPU devices, a verdict and numbers a user can act on, one line and exit 3 when it does not
fit. Each CLI run is a subprocess: JAX's platform and device count are fixed per process."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from physics_lm.launch import topology

from physics_lm.train import metrics

ROOT = Path(__file__).resolve().parents[1]
SMOKE = "--config=configs/cfg.py:smoke"  # 2 layers, width 32, T = 64, batch 8
# The same width-8192 model as `smoke` otherwise: a 1.6B-parameter state, ~19 GB per v5e chip.
TOO_BIG = ("--config.model.d_model=8192", "--config.model.num_heads=16")


def _aot(*args: str, tmp_path: Path) -> tuple[subprocess.CompletedProcess, dict | None]:
    out = tmp_path / "aot.json"
    proc = subprocess.run([sys.executable, "-m", "physics_lm.launch.aot", *args,
                           f"--json={out}"], cwd=ROOT, capture_output=True, text=True,
                          timeout=600, env=os.environ)
    return proc, json.loads(out.read_text()) if out.exists() else None


@pytest.fixture(scope="module")
def libtpu() -> None:
    """The TPU compiler (the `tpu` extra); CI installs it, elsewhere its absence skips."""
    if importlib.util.find_spec("libtpu") is None:
        if os.environ.get("CI", "").lower() not in ("", "0", "false"):
            pytest.fail("libtpu is missing: CI installs the `tpu` extra", pytrace=False)
        pytest.skip("libtpu is not installed (pip install -e '.[tpu]')")


def test_cloud_tpu_names_map_to_slices():
    shapes = {"v4-8": (2, 2, 1), "v4-32": (2, 2, 4), "v4-128": (4, 4, 4), "v5p-32": (2, 2, 4),
              "v5p-1024": (8, 8, 8), "v5e-4": (2, 2), "v5e-8": (2, 4), "v5e-256": (16, 16),
              "v5litepod-16": (4, 4), "v6e-64": (8, 8), "v5p:4x4x12": (4, 4, 12)}
    for name, shape in shapes.items():
        assert topology.parse(name)[1] == shape, name
    assert topology.parse("v5p-32")[0].topology_prefix == "v5"  # get_topology_desc's name
    assert topology.accelerator_type(*topology.parse("v5e:2x2")) == "v5litepod-4"
    for bad, why in (("v5p-12", "name the slice shape"), ("v4-6", "name the slice shape"),
                     ("v3-8", "unknown TPU generation"), ("tpu", "expected cpu-N"),
                     ("v5e:2x2x1", "expected cpu-N")):
        with pytest.raises(topology.TopologyError, match=why):
            topology.parse(bad)
    # The trainer's MFU table agrees with the fit check's chips, by the kind jax reports.
    for chip in topology.CHIPS.values():
        assert metrics.peak_flops_of_kind(chip.device_kind) == chip.peak_bf16_flops, chip


def test_tpu_topology_fits_and_reports(libtpu, tmp_path):
    proc, r = _aot(SMOKE, "--topology=v5e:2x2", "--mfu=0.5", tmp_path=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "verdict: fits" in proc.stdout and "16.0 GiB HBM" in proc.stdout, proc.stdout
    assert r["devices"] == 4 and r["mesh"] == {"data": 4, "fsdp": 1, "tensor": 1}
    assert r["hbm_bytes"] == 16 * 2**30 and "cloud.google.com/tpu/docs/v5e" in r["hbm_source"]
    mem = r["memory"]
    assert mem["argument"] >= r["state_bytes"] > 0 and mem["peak"] < r["hbm_bytes"]
    # XLA:TPU's count of the whole step (sampler, optimizer, softmax) vs the model's 6N + attn.
    assert r["compiled_flops_per_step"] == r["compiled_flops"]  # grad_accum 1: no loop to scale
    assert 1.0 < r["compiled_flops_per_step"] / r["model_flops"] < 3.0, r
    tokens = r["batch_size"] * r["seq_len"]
    want = r["model_flops"] / (4 * 197e12 * 0.5)
    assert r["step_time_s"] == pytest.approx(want) and r["tokens_per_s"] == pytest.approx(
        tokens / want)
    assert r["attention"] == "xla" and r["fused_attention_calls"] == 0, r


def test_tpu_topology_lowers_the_splash_kernel(libtpu, tmp_path):
    """`model.attention=splash` compiled for a TPU from this CPU host: the step holds the Pallas
    kernel (Mosaic custom calls: forward and backward in each of the 2 layers), which no CPU
    test can run."""
    proc, r = _aot(SMOKE, "--topology=v5e:2x2", "--config.model.attention=splash",
                   "--config.task.seq_len=128", "--config.model.max_len=128", tmp_path=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert r["attention"] == "splash" and r["fused_attention_calls"] >= 2, r
    assert f"splash, lowered: {r['fused_attention_calls']} kernel calls" in proc.stdout
    # T = 64 is no multiple of the kernel's 128-blocks: XLA attention, and the report says so.
    proc, r = _aot(SMOKE, "--topology=v5e:2x2", "--config.model.attention=splash",
                   tmp_path=tmp_path)
    assert proc.returncode == 0 and r["fused_attention_calls"] == 0, proc.stderr[-3000:]
    assert "splash requested, but the compiled step holds no kernel call" in proc.stdout


def test_tpu_does_not_fit(libtpu, tmp_path):
    # The compiler itself refuses a program larger than the chip's HBM.
    proc, _ = _aot(SMOKE, "--topology=v5e:2x2", *TOO_BIG, tmp_path=tmp_path)
    assert proc.returncode == 3, proc.stderr[-3000:]
    line = proc.stderr.strip().splitlines()[-1]
    assert line.startswith("does not fit: the XLA:TPU compiler ran out of HBM"), line
    assert "--config.mesh.fsdp=" in line and "model.remat=True" in line, line


def test_cpu_devices_fit_check(tmp_path, load_config):
    # The CLI on cpu-8 with a stated device memory (an absl override): one line, exit 3.
    proc, _ = _aot(SMOKE, "--topology=cpu-8", "--config.train.device_memory_bytes=100000",
                   tmp_path=tmp_path)
    assert proc.returncode == 3, proc.stderr[-3000:]
    line = proc.stderr.strip().splitlines()[-1]
    assert line.startswith("does not fit: cpu-8: the train step needs"), line
    assert "but the device has 0.1 MB" in line and "a smaller train.batch_size" in line, line
    # Without one it reports and passes; in this process (8 fake devices), the same program
    # served by the compilation cache.
    from physics_lm.launch import aot

    from physics_lm.config import from_config_dict

    r = aot.analyse(from_config_dict(load_config("cfg", "smoke")), topology.resolve("cpu-8"), 0.4)
    assert r["devices"] == 8 and r["hbm_bytes"] is None and r["step_time_s"] is None
    assert r["memory"]["peak"] > r["state_bytes"] > 0
    assert "verdict: compiled (no HBM figure" in aot.report(r, SMOKE)
