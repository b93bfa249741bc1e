"""One run on a Slurm GPU cluster through `srun`: one process per GPU, or one per host.

  python launch/slurm.py --nodes=4 --gpus_per_node=8 --partition=a100 -- \
      --config=configs/cfg.py --workdir=/shared/runs/cfg3f

`srun` starts the processes (inside an `salloc`/`sbatch` allocation, or making one);
`jax.distributed.initialize()` reads the coordinator, the process count and each process's id
from Slurm's environment (SLURM_* variables) by itself. `--per=gpu` (default): one process per
GPU, each told its GPU through SLURM_LOCALID (every GPU of the node stays visible, as JAX's Slurm
detection expects). `--per=host`: one process per node driving all its GPUs
(JAX_LOCAL_DEVICE_IDS lists them, else JAX would give the single local process GPU 0 only).
The workdir must be on a filesystem every node mounts. `--dry_run` prints the command.
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
from collections.abc import Sequence


def command(flags: Sequence[str], args: argparse.Namespace) -> list[str]:
    per_gpu = args.per == "gpu"
    tasks = args.gpus_per_node if per_gpu else 1
    alloc = [f"--nodes={args.nodes}", f"--ntasks-per-node={tasks}",
             f"--gpus-per-node={args.gpus_per_node}", f"--cpus-per-task={args.cpus_per_task}",
             *([f"--partition={args.partition}"] if args.partition else []),
             *([f"--account={args.account}"] if args.account else []),
             *([f"--time={args.time}"] if args.time else []),
             "--kill-on-bad-exit=1"]  # one dead process: stop the rest (no hung collectives)
    env = ([] if per_gpu else
           ["--export=ALL,JAX_LOCAL_DEVICE_IDS="
            + ",".join(str(i) for i in range(args.gpus_per_node))])
    train = [args.python, "-m", "physics_lm.main", *flags, "--config.mesh.distributed=True"]
    return ["srun", *alloc, *env, *train]


def parse(argv: Sequence[str]) -> tuple[argparse.Namespace, list[str]]:
    argv = list(argv)
    own, flags = (argv[:argv.index("--")], argv[argv.index("--") + 1:]) if "--" in argv else (
        argv, [])
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--nodes", type=int, required=True)
    p.add_argument("--gpus_per_node", type=int, required=True)
    p.add_argument("--per", choices=("gpu", "host"), default="gpu",
                   help="one process per GPU (default) or one per node")
    p.add_argument("--cpus_per_task", type=int, default=8)
    p.add_argument("--partition", default="")
    p.add_argument("--account", default="")
    p.add_argument("--time", default="", help="wall-clock limit, e.g. 24:00:00")
    p.add_argument("--python", default="python3", help="interpreter with physics_lm installed")
    p.add_argument("--dry_run", action="store_true", help="print the command, run nothing")
    args = p.parse_args(own)
    if not any(f.startswith("--config=") for f in flags) or not any(
            f.startswith("--workdir=") for f in flags):
        p.error("give physics_lm.main's --config=… and --workdir=… after --")
    return args, flags


def sweep_command(argv: list[str], **launcher_args: str) -> list[list[str]]:
    """The sweep's launcher interface (`launch/launchers.py`): nodes=, gpus_per_node=, … args."""
    from physics_lm.launch import launchers

    args, flags = launchers.checked("slurm", parse, launchers.as_cli(argv, launcher_args))
    return [command(flags, args)]


def main(argv: Sequence[str] | None = None) -> int:
    args, flags = parse(sys.argv[1:] if argv is None else argv)
    cmd = command(flags, args)
    print(shlex.join(cmd), flush=True)
    return 0 if args.dry_run else subprocess.run(cmd, check=False).returncode


if __name__ == "__main__":
    sys.exit(main())
