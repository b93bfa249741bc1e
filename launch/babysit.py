"""Reruns a training command after a preemption or crash until its workdir says it finished.

  python launch/babysit.py --max_restarts=20 -- \
      python -m physics_lm.main --config=configs/igsm.py --workdir=gs://bucket/run

The run has finished when the trainer wrote `WORKDIR/finished.json` (after its final checkpoint
committed; physics_lm/train/workdir.py). Until then every exit is relaunched (the trainer resumes
from its latest good checkpoint and sets damaged ones aside, so a relaunch always makes progress)
after a back-off that doubles from `--backoff_s` to `--max_backoff_s`, at most `--max_restarts`
times. Exits that a relaunch would only repeat stop at once: 2 (a refused config, flag or workdir)
and 3 (a non-finite loss; the data of a step never changes). SIGTERM or Ctrl-C to the babysitter
is passed to the child, which saves and exits; the babysitter then stops too.

The command can be anything that trains into the workdir: `python -m physics_lm.main`, or
`python launch/multihost.py`, `launch/tpu_pod.py`, `launch/xpk.py`, `launch/slurm.py` (run the
babysitter where it survives the preemption, e.g. beside the pod, not on it).
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import time
from collections.abc import Sequence

FINISHED = "finished.json"  # = physics_lm.train.workdir.FINISHED (this module imports no JAX)
DETERMINISTIC = (2, 3)


def workdir_of(cmd: Sequence[str]) -> str | None:
    """The value of `--workdir=DIR` (or `--workdir DIR`) in `cmd`."""
    for i, a in enumerate(cmd):
        if a.startswith("--workdir="):
            return a.split("=", 1)[1]
        if a == "--workdir" and i + 1 < len(cmd):
            return cmd[i + 1]
    return None


def finished(workdir: str) -> bool:
    from etils import epath  # orbax's path library: local paths and gs:// alike

    return (epath.Path(workdir) / FINISHED).exists()


def babysit(cmd: Sequence[str], workdir: str, *, max_restarts: int = 10, backoff_s: float = 30.0,
            max_backoff_s: float = 600.0, deterministic: Sequence[int] = DETERMINISTIC) -> int:
    """Runs `cmd` until `workdir` finished; returns 0, or the exit code that made it give up."""
    stopping: list[int] = []
    child: list[subprocess.Popen] = []

    def forward(signum: int, frame) -> None:
        stopping.append(signum)
        print(f"babysit: signal {signum}: SIGTERM to the child, then stopping", flush=True)
        if child and child[-1].poll() is None:
            child[-1].send_signal(signal.SIGTERM)

    old = {s: signal.signal(s, forward) for s in (signal.SIGTERM, signal.SIGINT)}
    delay, rc = backoff_s, 0
    try:
        for attempt in range(1, max_restarts + 2):
            if finished(workdir):
                print(f"babysit: {workdir} finished", flush=True)
                return 0
            child.append(subprocess.Popen(list(cmd), start_new_session=True))
            print(f"babysit: attempt {attempt}: pid {child[-1].pid}", flush=True)
            rc = child[-1].wait()
            if finished(workdir):
                print(f"babysit: {workdir} finished", flush=True)
                return 0
            if stopping:  # the child's own code (a signal death -S as 128+S)
                return 128 - rc if rc < 0 else rc
            if rc in deterministic:
                print(f"babysit: exit code {rc} would repeat on a relaunch: giving up", flush=True)
                return rc
            if attempt > max_restarts:
                break
            print(f"babysit: exit code {rc} before the run finished: relaunching in {delay:g}s",
                  flush=True)
            time.sleep(delay)
            delay = min(delay * 2, max_backoff_s)
    finally:
        for s, h in old.items():
            signal.signal(s, h)
    print(f"babysit: gave up after {max_restarts} restarts (last exit code {rc})", flush=True)
    return rc or 1


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--" not in argv:
        print("usage: babysit.py [options] -- COMMAND ...", file=sys.stderr)
        return 2
    own, cmd = argv[:argv.index("--")], argv[argv.index("--") + 1:]
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", default=None, help="default: the command's --workdir")
    parser.add_argument("--max_restarts", type=int, default=10)
    parser.add_argument("--backoff_s", type=float, default=30.0)
    parser.add_argument("--max_backoff_s", type=float, default=600.0)
    args = parser.parse_args(own)
    workdir = args.workdir or workdir_of(cmd)
    if not cmd or not workdir:
        parser.error("give the command after -- and a --workdir (in it or here)")
    return babysit(cmd, workdir, max_restarts=args.max_restarts, backoff_s=args.backoff_s,
                   max_backoff_s=args.max_backoff_s)


if __name__ == "__main__":
    sys.exit(main())
