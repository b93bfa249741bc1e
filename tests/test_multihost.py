"""Two local processes x 4 fake CPU devices (launch/multihost.py) = one process x 8 devices.

One CFG pair run carries most assertions (each pair launch costs two compiles): it resumes a
single-process checkpoint (after setting aside a damaged newer one, agreed by both processes),
trains with the single process's losses, is stopped by SIGTERM to process 1 alone (both save the
same one checkpoint and exit 0), writes metrics/TensorBoard from process 0 only, and its checkpoint
restores in a single process to the single process's params.
"""

import contextlib
import importlib.util
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import jax
import numpy as np
import pytest
from helpers import FAST, truncate_checkpoint

from physics_lm.config import from_config_dict
from physics_lm.train.setup import build_experiment, fresh_state
from physics_lm.train.trainer import jit_steps, load_trained, train_and_evaluate
from physics_lm.train.workdir import finished_step

ROOT = Path(__file__).resolve().parents[1]
CFG_FLAGS = {"train.num_steps": 200, "train.checkpoint_every": 100, "train.eval_batches": 0,
             "train.log_every": 1, "train.keep_checkpoints": 3}
IGSM_FLAGS = {"task.groups": 8, "train.num_steps": 2, "train.eval_batches": 0,
              "train.log_every": 1, "train.checkpoint_every": 2, "optim.warmup_steps": 1}


def _config(name: str, overrides: dict):
    """configs/<name>.py:smoke of this checkout (the file the pair loads) + overrides."""
    path = ROOT / "configs" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"_config_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    c = module.get_config("smoke")
    for key, value in overrides.items():
        section, k = key.split(".")
        c[section][k] = value
    return from_config_dict(c)


def _launch(name: str, workdir: Path, overrides: dict, env: dict | None = None):
    """The pair on `configs/<name>.py:smoke` + overrides; (process, its output lines so far)."""
    flags = [f"--config=configs/{name}.py:smoke", f"--workdir={workdir}",
             *(f"--config.{k}={v}" for k, v in overrides.items())]
    proc = subprocess.Popen([sys.executable, "launch/multihost.py", "--grace_s=60", "--", *flags],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=env)
    lines: list[str] = []
    threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True).start()
    return proc, lines


@contextlib.contextmanager
def _pair(name: str, workdir: Path, overrides: dict, env: dict | None = None):
    """`_launch`, and on the way out (a failed assertion too) no process left behind."""
    proc, lines = _launch(name, workdir, overrides, env)
    try:
        yield proc, lines
    finally:
        if proc.poll() is None:
            deadline = time.time() + 30
            while not lines and time.time() < deadline:
                time.sleep(0.1)
            found = re.search(r"pids \[(\d+), (\d+)\]", lines[0]) if lines else None
            for pid in map(int, found.groups() if found else ()):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            proc.kill()
            proc.wait()


def _rows(workdir: Path) -> list[dict]:
    path = workdir / "metrics.jsonl"
    if not path.exists():
        return []
    return [json.loads(x) for x in path.read_text().splitlines() if x.endswith("}")]


def _tail(lines: list[str], n: int = 30) -> str:
    """The last `n` lines of each process, for failure messages."""
    return "".join(x for p in (0, 1) for x in [y for y in lines if y.startswith(f"[p{p}] ")
                                                 and "Gloo" not in y][-n:])


def _said(lines: list[str], process: int, pattern: str) -> list[str]:
    return [m.group(1) for x in lines if x.startswith(f"[p{process}] ")
            and (m := re.search(pattern, x))]


@pytest.mark.slow
def test_pair_resumes_agrees_stops_on_sigterm_and_matches_one_process(tmp_path):
    cfg = _config("cfg", CFG_FLAGS)
    run = tmp_path / "pair"
    train_and_evaluate(cfg, run, stop_at_step=2)  # one process x 8 devices: checkpoint 2
    train_and_evaluate(cfg, run, stop_at_step=3)  # and 3, which we damage
    truncate_checkpoint(run / "checkpoints" / "3")
    tb_before = len(list((run / "tb").iterdir()))

    with _pair("cfg", run, CFG_FLAGS) as (proc, lines):
        deadline = time.time() + 600
        while time.time() < deadline and proc.poll() is None:
            if any(r["step"] >= 6 for r in _rows(run) if "loss" in r):
                break
            time.sleep(0.2)
        pids = [int(p) for p in re.search(r"pids \[(\d+), (\d+)\]", lines[0]).groups()]
        assert proc.poll() is None, _tail(lines)
        os.kill(pids[1], signal.SIGTERM)  # process 1 alone: process 0 must stop at the same step
        assert proc.wait(timeout=300) == 0, _tail(lines)
    out = "".join(lines)

    # Both processes set the damaged checkpoint aside, resumed from 2 and stopped at one step.
    for p in (0, 1):
        assert _said(lines, p, r"checkpoint (\S+) does not restore"), out[-4000:]
        assert _said(lines, p, r"resumed from step (\d+)") == ["2"], out[-4000:]
    saved = _said(lines, 0, r"stopping: saved step (\d+)")
    assert saved and saved == _said(lines, 1, r"stopping: saved step (\d+)"), out[-4000:]
    stop = int(saved[0])
    assert stop >= 6
    ckpts = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert ckpts == sorted(["2", str(stop), "3.damaged"]), ckpts
    assert finished_step(run) is None  # stopped early: a babysitter relaunches it

    # Process 0 alone wrote metrics (each step once) and one more TensorBoard file.
    steps = [r["step"] for r in _rows(run) if "loss" in r]
    assert steps == list(range(1, stop + 1)), steps
    assert len(list((run / "tb").iterdir())) == tb_before + 1

    # The pair's losses and final params are one process's (8 devices, same steps).
    ref = tmp_path / "single"
    train_and_evaluate(cfg, ref, stop_at_step=stop)
    want = {r["step"]: r["loss"] for r in _rows(ref) if "loss" in r}
    got = {r["step"]: r["loss"] for r in _rows(run) if "loss" in r}
    np.testing.assert_allclose([got[s] for s in range(3, stop + 1)],
                               [want[s] for s in range(3, stop + 1)], rtol=2e-5)
    _, params, step = load_trained(cfg, run)  # the pair's checkpoint, in this one process
    _, ref_params, _ = load_trained(cfg, ref)
    assert step == stop
    for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(ref_params), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


@pytest.mark.slow
def test_igsm_pair_matches_one_process(tmp_path):
    """iGSM (groups = data-parallel size 8): the pair's losses are one process's. XLA's backend
    optimisation is off on both sides: the sampler's compile dominates, not its run time."""
    env = {**os.environ, "XLA_FLAGS": "--xla_backend_optimization_level=0"}
    with _pair("igsm", tmp_path, IGSM_FLAGS, env=env) as (proc, lines):
        exp = build_experiment(_config("igsm", IGSM_FLAGS), jax.devices())
        state = fresh_state(exp)
        train, _ = jit_steps(exp)
        want = []
        with jax.set_mesh(exp.mesh):
            train = train.lower(state).compile(FAST)
            for _ in range(2):
                state, m = train(state)
                want.append(float(m["loss"]))
        assert proc.wait(timeout=900) == 0, _tail(lines)
    got = [r["loss"] for r in _rows(tmp_path) if "loss" in r]
    np.testing.assert_allclose(got, want, rtol=2e-5)
    assert finished_step(tmp_path) == 2
