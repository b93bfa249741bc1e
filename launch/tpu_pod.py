"""One run on every worker of a Cloud TPU VM pod slice (multi-host, `jax.distributed`).

  python launch/tpu_pod.py --tpu=my-v5p-32 --zone=us-east5-a -- \
      --config=configs/igsm_depth20.py --workdir=gs://my-bucket/runs/d20

Steps, each a `gcloud compute tpus tpu-vm` command on `--worker=all`:
  1. install: `--install=copy` (default) packs this checkout's committed HEAD (`git archive`),
     copies it to every worker and pip-installs it there with `jax[tpu]`; `--install=pip` installs
     `--package` (e.g. `physics_lm @ git+https://…@<commit>`) from an index or a repository.
  2. run `python -m physics_lm.main FLAGS --config.mesh.distributed=True` on all workers at once;
     on a TPU VM `jax.distributed.initialize()` finds the coordinator and the process ids itself.
The workdir must be storage every worker sees (gs://…): checkpoints are written by all hosts
together, config/metrics by process 0. `--dry_run` prints the commands instead of running them.
Wrap it in launch/babysit.py (run beside the pod) to relaunch after a preemption.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TARBALL = "/tmp/physics_lm.tar.gz"
REMOTE_DIR = "~/physics_lm"


def gcloud(verb: str, args: argparse.Namespace, *rest: str) -> list[str]:
    where = [f"--zone={args.zone}", *([f"--project={args.project}"] if args.project else [])]
    return ["gcloud", "compute", "tpus", "tpu-vm", verb, *rest, *where, "--worker=all"]


def remote_train(flags: Sequence[str], install: str) -> str:
    """The shell line each worker runs. Config paths (`configs/x.py`) resolve against the
    unpacked checkout, or against the installed package (which ships configs/ inside it)."""
    where = "import os, physics_lm; print(os.path.dirname(physics_lm.__file__))"
    cd = f"cd {REMOTE_DIR}" if install == "copy" else f"cd \"$(python3 -c '{where}')\""
    train = ["python3", "-m", "physics_lm.main", *flags, "--config.mesh.distributed=True"]
    return f"{cd} && {shlex.join(train)}"


def commands(flags: Sequence[str], args: argparse.Namespace) -> list[list[str]]:
    """Every command, in order; the first runs here, the others on the pod."""
    jax_tpu = shlex.quote(f"jax[tpu]{args.jax_version}")
    if args.install == "copy":
        pack = ["git", "-C", str(REPO), "archive", "--format=tar.gz", f"--output={TARBALL}",
                "HEAD"]
        copy = gcloud("scp", args, TARBALL, f"{args.tpu}:{TARBALL}")
        setup = (f"rm -rf {REMOTE_DIR} && mkdir -p {REMOTE_DIR} && "
                 f"tar -xzf {TARBALL} -C {REMOTE_DIR} && "
                 f"python3 -m pip install -q {REMOTE_DIR} {jax_tpu}")
        steps = [pack, copy, gcloud("ssh", args, args.tpu, f"--command={setup}")]
    else:
        setup = f"python3 -m pip install -q {shlex.quote(args.package)} {jax_tpu}"
        steps = [gcloud("ssh", args, args.tpu, f"--command={setup}")]
    run = gcloud("ssh", args, args.tpu, f"--command={remote_train(flags, args.install)}")
    return [*steps, run]


def parse(argv: Sequence[str]) -> tuple[argparse.Namespace, list[str]]:
    argv = list(argv)
    own, flags = (argv[:argv.index("--")], argv[argv.index("--") + 1:]) if "--" in argv else (
        argv, [])
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tpu", required=True, help="TPU VM (pod slice) name")
    p.add_argument("--zone", required=True)
    p.add_argument("--project", default="")
    p.add_argument("--install", choices=("copy", "pip"), default="copy")
    p.add_argument("--package", default="", help="pip requirement for --install=pip")
    p.add_argument("--jax_version", default="==0.10.2", help="version spec appended to jax[tpu]")
    p.add_argument("--dry_run", action="store_true", help="print the commands, run nothing")
    args = p.parse_args(own)
    if args.install == "pip" and not args.package:
        p.error("--install=pip needs --package (e.g. 'physics_lm @ git+https://…@COMMIT')")
    check_flags(p, flags)
    return args, flags


def check_flags(p: argparse.ArgumentParser, flags: Sequence[str]) -> None:
    """physics_lm.main's flags must name a config and a workdir every host can see."""
    workdir = next((f.split("=", 1)[1] for f in flags if f.startswith("--workdir=")), None)
    if not any(f.startswith("--config=") for f in flags) or workdir is None:
        p.error("give physics_lm.main's --config=… and --workdir=… after --")
    if not workdir.startswith(("gs://", "/mnt/", "/gcs/")):
        print(f"warning: --workdir={workdir} looks local to each worker; checkpoints of a pod "
              "must be on shared storage (gs://…)", file=sys.stderr)


def sweep_command(argv: list[str], **launcher_args: str) -> list[list[str]]:
    """The sweep's launcher interface (`launch/launchers.py`): tpu=, zone=, … as launcher args."""
    from physics_lm.launch import launchers

    args, flags = launchers.checked("tpu_pod", parse, launchers.as_cli(argv, launcher_args))
    return commands(flags, args)


def main(argv: Sequence[str] | None = None) -> int:
    from physics_lm.launch import launchers

    args, flags = parse(sys.argv[1:] if argv is None else argv)
    return launchers.run_commands(commands(flags, args), args.dry_run)


if __name__ == "__main__":
    sys.exit(main())
