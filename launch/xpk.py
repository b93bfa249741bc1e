"""One run as an xpk workload on a GKE cluster of TPU slices (a JobSet, one pod per TPU host).

  python launch/xpk.py --cluster=my-cluster --workload=d20 --tpu_type=v5p-32 --zone=us-east5-a \
      -- --config=configs/igsm_depth20.py --workdir=gs://my-bucket/runs/d20

xpk builds an image from `--base_docker_image` with this checkout (`--script-dir`) copied in
(or runs a ready `--docker_image`), then starts `python -m physics_lm.main FLAGS
--config.mesh.distributed=True` on every host; `jax.distributed.initialize()` detects the GKE TPU
environment by itself. `--max_restarts` lets the JobSet restart the workload after a preemption or
a crash; the relaunched hosts resume from the shared workdir (gs://…). `--dry_run` prints the
commands instead of running them.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def commands(flags: Sequence[str], args: argparse.Namespace) -> list[list[str]]:
    train = ["python3", "-m", "physics_lm.main", *flags, "--config.mesh.distributed=True"]
    # The image needs the package installed; a ready image (--docker_image) already has it.
    script = (shlex.join(train) if args.docker_image else
              f"python3 -m pip install -q . {shlex.quote('jax[tpu]' + args.jax_version)} && "
              f"{shlex.join(train)}")
    image = ([f"--docker-image={args.docker_image}"] if args.docker_image else
             [f"--base-docker-image={args.base_docker_image}", f"--script-dir={REPO}"])
    where = [f"--zone={args.zone}", *([f"--project={args.project}"] if args.project else [])]
    return [["xpk", "workload", "create", f"--cluster={args.cluster}",
             f"--workload={args.workload}", f"--tpu-type={args.tpu_type}",
             f"--num-slices={args.num_slices}", f"--max-restarts={args.max_restarts}",
             *where, *image, f"--command={script}"]]


def parse(argv: Sequence[str]) -> tuple[argparse.Namespace, list[str]]:
    argv = list(argv)
    own, flags = (argv[:argv.index("--")], argv[argv.index("--") + 1:]) if "--" in argv else (
        argv, [])
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cluster", required=True)
    p.add_argument("--workload", required=True, help="workload name (lower case, dashes)")
    p.add_argument("--tpu_type", required=True, help="e.g. v5p-32, v5litepod-256")
    p.add_argument("--num_slices", type=int, default=1)
    p.add_argument("--zone", required=True)
    p.add_argument("--project", default="")
    p.add_argument("--max_restarts", type=int, default=10,
                   help="JobSet restarts after a preemption or crash (the run resumes)")
    p.add_argument("--docker_image", default="", help="a ready image with physics_lm installed")
    p.add_argument("--base_docker_image", default="python:3.11",
                   help="image to which xpk adds this checkout (without --docker_image)")
    p.add_argument("--jax_version", default="==0.10.2", help="version spec appended to jax[tpu]")
    p.add_argument("--dry_run", action="store_true", help="print the commands, run nothing")
    args = p.parse_args(own)
    workdir = next((f.split("=", 1)[1] for f in flags if f.startswith("--workdir=")), "")
    if not any(f.startswith("--config=") for f in flags) or not workdir:
        p.error("give physics_lm.main's --config=… and --workdir=… after --")
    if not workdir.startswith("gs://"):
        print(f"warning: --workdir={workdir}: the hosts of a GKE workload share no disk; use "
              "gs://…", file=sys.stderr)
    return args, flags


def sweep_command(argv: list[str], **launcher_args: str) -> list[list[str]]:
    """The sweep's launcher interface (`launch/launchers.py`): cluster=, workload=, … args."""
    from physics_lm.launch import launchers

    args, flags = launchers.checked("xpk", parse, launchers.as_cli(argv, launcher_args))
    return commands(flags, args)


def main(argv: Sequence[str] | None = None) -> int:
    from physics_lm.launch import launchers

    args, flags = parse(sys.argv[1:] if argv is None else argv)
    return launchers.run_commands(commands(flags, args), args.dry_run)


if __name__ == "__main__":
    sys.exit(main())
