"""Launchers print the exact commands they would run (--dry_run); the babysitter relaunches a
killed or preempted child until the workdir says it finished, and never loops on a deterministic
failure."""

import importlib.util
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FLAGS = ["--config=configs/igsm.py", "--workdir=gs://b/run", "--config.model.num_layers=4"]
TRAIN = ["python3", "-m", "physics_lm.main", *FLAGS, "--config.mesh.distributed=True"]


def _module(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "launch" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _dry(script: str, *args: str) -> list[list[str]]:
    cmd = ([str(ROOT / "launch" / script)] if script.endswith(".sh") else
           [sys.executable, str(ROOT / "launch" / script)])
    out = subprocess.run([*cmd, *args], capture_output=True, text=True, check=False, timeout=60)
    assert out.returncode == 0, out.stderr
    return [shlex.split(line) for line in out.stdout.splitlines()]


def test_tpu_pod_copies_installs_and_runs_on_every_worker():
    where = ["--zone=us-east5-a", "--worker=all"]
    tgz = "/tmp/physics_lm.tar.gz"
    cmds = _dry("tpu_pod.py", "--tpu=pod", "--zone=us-east5-a", "--dry_run", "--", *FLAGS)
    ssh = ["gcloud", "compute", "tpus", "tpu-vm", "ssh", "pod"]
    assert cmds == [
        ["git", "-C", str(ROOT), "archive", "--format=tar.gz", f"--output={tgz}", "HEAD"],
        ["gcloud", "compute", "tpus", "tpu-vm", "scp", tgz, f"pod:{tgz}", *where],
        [*ssh, f"--command=rm -rf ~/physics_lm && mkdir -p ~/physics_lm && tar -xzf {tgz} -C "
               "~/physics_lm && python3 -m pip install -q ~/physics_lm 'jax[tpu]==0.10.2'",
         *where],
        [*ssh, f"--command=cd ~/physics_lm && {shlex.join(TRAIN)}", *where]]
    # The positional shell form runs the same commands.
    sh = _dry("tpu_pod.sh", "--dry_run", "pod", "us-east5-a", *(f.split("=", 1)[1] for f in
                                                                FLAGS[:2]), FLAGS[2])
    assert sh == cmds
    pip = _dry("tpu_pod.py", "--tpu=pod", "--zone=us-east5-a", "--project=p", "--install=pip",
               "--package=physics_lm @ git+https://x/y@abc", "--dry_run", "--", *FLAGS)
    assert len(pip) == 2 and pip[0][-3:] == ["--zone=us-east5-a", "--project=p", "--worker=all"]
    assert "pip install -q 'physics_lm @ git+https://x/y@abc' 'jax[tpu]==0.10.2'" in pip[0][6]
    assert pip[1][6].endswith(shlex.join(TRAIN)) and "physics_lm.__file__" in pip[1][6]


def test_xpk_creates_one_workload_that_restarts():
    (cmd,) = _dry("xpk.py", "--cluster=c", "--workload=d20", "--tpu_type=v5p-32",
                  "--zone=us-east5-a", "--dry_run", "--", *FLAGS)
    assert cmd[:11] == ["xpk", "workload", "create", "--cluster=c", "--workload=d20",
                        "--tpu-type=v5p-32", "--num-slices=1", "--max-restarts=10",
                        "--zone=us-east5-a", "--base-docker-image=python:3.11",
                        f"--script-dir={ROOT}"]
    assert cmd[11] == ("--command=python3 -m pip install -q . 'jax[tpu]==0.10.2' && "
                       + shlex.join(TRAIN))
    (ready,) = _dry("xpk.py", "--cluster=c", "--workload=d20", "--tpu_type=v5p-32",
                    "--zone=z", "--docker_image=gcr.io/p/img", "--dry_run", "--", *FLAGS)
    assert "--docker-image=gcr.io/p/img" in ready and ready[-1] == f"--command={shlex.join(TRAIN)}"


def test_slurm_srun_per_gpu_and_per_host():
    base = ["srun", "--nodes=2", "--cpus-per-task=8", "--partition=a100", "--kill-on-bad-exit=1"]
    (gpu,) = _dry("slurm.py", "--nodes=2", "--gpus_per_node=4", "--partition=a100",
                  "--dry_run", "--", *FLAGS)
    assert gpu == [*base[:2], "--ntasks-per-node=4", "--gpus-per-node=4", *base[2:], *TRAIN]
    (host,) = _dry("slurm.py", "--nodes=2", "--gpus_per_node=4", "--per=host",
                   "--partition=a100", "--dry_run", "--", *FLAGS)
    assert host == [*base[:2], "--ntasks-per-node=1", "--gpus-per-node=4", *base[2:],
                    "--export=ALL,JAX_LOCAL_DEVICE_IDS=0,1,2,3", *TRAIN]


def test_launchers_refuse_a_run_without_config_or_workdir():
    for script, args in [("tpu_pod.py", ["--tpu=t", "--zone=z"]),
                         ("xpk.py", ["--cluster=c", "--workload=w", "--tpu_type=v4-8",
                                     "--zone=z"]),
                         ("slurm.py", ["--nodes=1", "--gpus_per_node=1"])]:
        out = subprocess.run([sys.executable, str(ROOT / "launch" / script), *args, "--dry_run",
                              "--", "--config=configs/cfg.py"], capture_output=True, text=True,
                             check=False, timeout=60)
        assert out.returncode == 2 and "--workdir" in out.stderr, (script, out.stderr)


def test_multihost_environment_and_exit_code():
    mh = _module("multihost")
    env = mh.process_env(1, 2, 4, 1234, base={"XLA_FLAGS": "--xla_force_host_platform_device_"
                                               "count=8 --xla_dump_to=/x", "PYTHONPATH": "/p"})
    assert env["XLA_FLAGS"] == "--xla_dump_to=/x --xla_force_host_platform_device_count=4"
    assert (env["JAX_COORDINATOR_ADDRESS"], env["JAX_NUM_PROCESSES"], env["JAX_PROCESS_ID"],
            env["JAX_PLATFORMS"], env["JAX_CPU_COLLECTIVES_IMPLEMENTATION"]) == (
        "127.0.0.1:1234", "2", "1", "cpu", "gloo")
    assert env["PYTHONPATH"].split(":") == [str(ROOT), "/p"]
    assert mh.exit_code([0, 0]) == 0 and mh.exit_code([0, 2]) == 2
    assert mh.exit_code([1, -signal.SIGKILL]) == 137


CHILD = """
import json, pathlib, sys, time
wd = pathlib.Path(sys.argv[2].split("=", 1)[1]); wd.mkdir(exist_ok=True)
log = wd / "attempts"
n = len(log.read_text()) + 1 if log.exists() else 1
log.write_text("x" * n)
mode = sys.argv[1]
if mode == "refused":
    sys.exit(2)
if mode == "crash":
    sys.exit(1)
if n == 1:
    time.sleep(300)  # killed by the test
if n == 2:
    sys.exit(0)  # a clean preemption exit (checkpoint saved) before the last step
(wd / "finished.json").write_text(json.dumps({"step": 3}))
"""


def _babysit(tmp_path: Path, mode: str, *opts: str) -> subprocess.Popen:
    (tmp_path / "child.py").write_text(CHILD)
    return subprocess.Popen(
        [sys.executable, str(ROOT / "launch" / "babysit.py"), "--backoff_s=0.05", *opts, "--",
         sys.executable, str(tmp_path / "child.py"), mode, f"--workdir={tmp_path / 'run'}"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_babysitter_relaunches_a_killed_child_until_finished(tmp_path):
    proc = _babysit(tmp_path, "finish")
    first = proc.stdout.readline()
    assert first.startswith("babysit: attempt 1: pid "), first
    pid = int(first.split()[-1])
    deadline = time.time() + 30
    while not (tmp_path / "run" / "attempts").exists() and time.time() < deadline:
        time.sleep(0.05)
    os.kill(pid, signal.SIGKILL)
    out = first + proc.stdout.read()
    assert proc.wait(timeout=60) == 0, out
    assert (tmp_path / "run" / "attempts").read_text() == "xxx", out
    assert "exit code -9 before the run finished: relaunching" in out
    assert "exit code 0 before the run finished: relaunching" in out
    assert out.rstrip().endswith("finished"), out
    assert json.loads((tmp_path / "run" / "finished.json").read_text()) == {"step": 3}
    # A finished workdir is not launched again.
    again = _babysit(tmp_path, "finish")
    assert again.wait(timeout=60) == 0 and "attempt" not in again.stdout.read()


@pytest.mark.parametrize(("mode", "opts", "code", "attempts"), [
    ("refused", (), 2, 1), ("crash", ("--max_restarts=2",), 1, 3)])
def test_babysitter_stops_on_deterministic_failure_and_after_max_restarts(
        tmp_path, mode, opts, code, attempts):
    proc = _babysit(tmp_path, mode, *opts)
    out = proc.stdout.read()
    assert proc.wait(timeout=60) == code, out
    assert len((tmp_path / "run" / "attempts").read_text()) == attempts, out
    assert ("giving up" if mode == "refused" else "gave up after 2 restarts") in out


def test_finished_marker_name_is_the_trainers():
    from physics_lm.train.workdir import FINISHED

    assert _module("babysit").FINISHED == FINISHED
