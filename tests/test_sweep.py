"""The sweep runner on a two-entry smoke sweep: parallel runs, the status table before and after,
a rerun that skips finished entries, --only, overrides after `--`, a failed run shown as failed,
and the launcher hook."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from physics_lm.launch import launchers, sweep
from physics_lm.launch import sweep_status as st

ROOT = Path(__file__).resolve().parents[1]
SWEEP_CONFIG = '''
"""Two 2-step smoke runs (seeds 0 and 1) of the Part 1 config."""
from physics_lm.configs import cfg


def get_config(arg=None):
    c = cfg.get_config("smoke")
    c.train.update(num_steps=2, checkpoint_every=2, eval_batches=0, log_every=1)
    c.optim.warmup_steps = 1
    return c


def sweep(add):
    for seed in (0, 1):
        add(**{"config.seed": seed})
'''


@pytest.fixture
def sweep_config(tmp_path) -> str:
    path = tmp_path / "two_seeds.py"
    path.write_text(textwrap.dedent(SWEEP_CONFIG))
    return str(path)


def _sweep(*args: str) -> subprocess.CompletedProcess:
    # One device per run: two runs share the machine's cores.
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=1"}
    return subprocess.run([sys.executable, "-m", "physics_lm.launch.sweep", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=600, env=env)


def _states(out: str) -> dict[str, str]:
    rows = [line.split("  ") for line in out.splitlines() if line.startswith("seed=")]
    return {r[0].strip(): next(c.strip() for c in r[1:] if c.strip()) for r in rows}


def test_two_entry_smoke_sweep(sweep_config, tmp_path, capsys):
    root = tmp_path / "runs"
    base = (f"--config={sweep_config}", f"--root={root}")
    assert sweep.main([*base, "--status"]) == 0
    assert _states(capsys.readouterr().out) == {"seed=0": "not started", "seed=1": "not started"}

    run = _sweep(*base, "--parallel=2")
    assert run.returncode == 0, run.stdout + run.stderr
    assert _states(run.stdout) == {"seed=0": "done", "seed=1": "done"}, run.stdout
    assert "[seed=0] done at step 2/2" in run.stdout
    for seed in (0, 1):
        workdir = root / f"seed={seed}"
        assert json.loads((workdir / "config.json").read_text())["seed"] == seed
        assert st.read_record(workdir)["returncode"] == 0
        row = st.entry_status(f"seed={seed}", workdir)
        assert (row.state, row.step, row.num_steps) == ("done", 2, 2) and row.loss > 0
    # Both ran at once: each started before the other finished.
    records = [st.read_record(root / f"seed={s}") for s in (0, 1)]
    assert max(r["started"] for r in records) <= min(r["ended"] for r in records)

    again = _sweep(*base, "--parallel=2")
    assert again.returncode == 0 and again.stdout.count("skipped: done") == 2, again.stdout
    assert [st.read_record(root / f"seed={s}") for s in (0, 1)] == records  # nothing relaunched

    # --only, and `--` overrides for every entry: 3 heads do not divide width 32 -> exit 2.
    bad_root = tmp_path / "bad"
    failed = _sweep(f"--config={sweep_config}", f"--root={bad_root}", "--only=seed=1", "--",
                    "--config.model.num_heads=3")
    assert failed.returncode == 1 and "[seed=1] FAILED (exit 2)" in failed.stdout, failed.stdout
    assert "model.num_heads" in failed.stdout  # the log's last lines
    assert not (bad_root / "seed=0").exists()
    assert sweep.main([f"--config={sweep_config}", f"--root={bad_root}", "--status"]) == 0
    assert _states(capsys.readouterr().out) == {"seed=0": "not started", "seed=1": "failed"}


def test_status_reads_running_and_stopped_runs(tmp_path):
    running, stopped = tmp_path / "a", tmp_path / "b"
    for workdir in (running, stopped):
        (workdir / "checkpoints" / "4").mkdir(parents=True)
        (workdir / "config.json").write_text(json.dumps({"train": {"num_steps": 8}}))
        (workdir / "metrics.jsonl").write_text(
            '{"step": 5, "loss": 1.5}\n{"step": 6, "loss": 1.25}\n{"step": 6, "eval_loss": 1.3}'
            '\n{"step": 7, "lo')  # a line cut by a crash
    st.write_record(running, {"pid": os.getpid(), "host": socket.gethostname(),
                              "returncode": None})
    row = st.entry_status("a", running)
    assert (row.state, row.step, row.num_steps, row.loss, row.eval_loss) == (
        "running", 6, 8, 1.25, 1.3)
    assert st.entry_status("b", stopped).state == "stopped"  # launched by hand, not finished
    table = st.table([row, st.entry_status("b", stopped)])
    assert "6/8" in table and "1 running, 1 stopped" in table


def test_launcher_hook(sweep_config, tmp_path, monkeypatch, capsys):
    seen = []

    def fake(argv: list[str], **args: str) -> list[list[str]]:
        seen.append((argv, args))
        return [["ssh", args["host"], *argv]]

    monkeypatch.setitem(launchers.LAUNCHERS, "fake", f"{__name__}:_FAKE")
    monkeypatch.setattr(sys.modules[__name__], "_FAKE", fake, raising=False)
    assert sweep.main([f"--config={sweep_config}", f"--root={tmp_path}", "--launcher=fake",
                       "--launcher_arg=host=pod-1", "--dry_run", "--skip=seed=0", "--",
                       "--config.train.num_steps=3"]) == 0
    (argv, args), = seen
    assert argv[:3] == ["python", "-m", "physics_lm.main"] and args == {"host": "pod-1"}
    assert argv[-2:] == [f"--workdir={tmp_path / 'seed=1'}", "--config.train.num_steps=3"]
    assert capsys.readouterr().out.startswith("ssh pod-1 python -m physics_lm.main")
    assert launchers.local(argv) == [[sys.executable, *argv[1:]]]
    for name, why in (("nope", "unknown; known: local"), ("local", "takes no --launcher_arg")):
        assert sweep.main([f"--config={sweep_config}", f"--root={tmp_path}",
                           f"--launcher={name}", "--launcher_arg=a=b", "--dry_run"]) == 2
        assert why in capsys.readouterr().err
    assert sweep.main([f"--config={sweep_config}", f"--root={tmp_path}", "--only=seed=7",
                       "--status"]) == 2
    assert "--only=seed=7 matches no entry; entries: seed=0, seed=1" in capsys.readouterr().err


@pytest.mark.parametrize("name,args,want", [
    ("tpu_pod", {"tpu": "pod", "zone": "z"}, ["--command=cd ~/physics_lm && python3 -m"]),
    ("xpk", {"cluster": "c", "workload": "w", "tpu_type": "v5p-32", "zone": "z"},
     ["xpk", "workload", "create", "--cluster=c"]),
    ("slurm", {"nodes": "2", "gpus_per_node": "8"}, ["srun", "--nodes=2"]),
])
def test_pod_launchers_take_sweep_entries(name, args, want, capsys):
    argv = ["python", "-m", "physics_lm.main", "--config=configs/igsm.py",
            "--config.seed=1", "--workdir=gs://b/seed=1"]
    cmds = launchers.get(name)(argv, **args)
    last = cmds[-1]
    text = " ".join(last)
    assert all(w in text for w in want), last
    assert "--config.seed=1" in text and "--workdir=gs://b/seed=1" in text
    assert "--config.mesh.distributed=True" in text
    with pytest.raises(launchers.LauncherError, match=f"--launcher={name}: bad"):
        launchers.get(name)(argv, bogus="1")
