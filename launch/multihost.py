"""N local processes x M fake CPU devices as one multi-host JAX run: a pod on a laptop.

  python launch/multihost.py --num_processes=2 --devices_per_process=4 -- \
      --config=configs/cfg.py:smoke --workdir=/tmp/pair

Every process runs `python -m physics_lm.main` with the flags after `--` plus
`--config.mesh.distributed=True`; it learns its id, the process count and the coordinator (process
0, on a free local port) from JAX_PROCESS_ID / JAX_NUM_PROCESSES / JAX_COORDINATOR_ADDRESS
(physics_lm/train/distributed.py), and collectives between processes go through gloo. Each output
line is prefixed with `[pK]`. SIGTERM or Ctrl-C here is passed to every process (they agree on a
step, save one checkpoint and exit); a process that fails takes the others down after `--grace_s`.
The exit code is the worst child's (a child killed by signal S counts as 128+S).
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def process_env(process_id: int, num_processes: int, devices: int, port: int,
                base: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of local process `process_id`: CPU only, `devices` fake devices each."""
    env = dict(os.environ if base is None else base)
    flags = [f for f in env.get("XLA_FLAGS", "").split()
             if not f.startswith("--xla_force_host_platform_device_count")]
    env.update({
        "JAX_PLATFORMS": "cpu",
        "XLA_FLAGS": " ".join([*flags, f"--xla_force_host_platform_device_count={devices}"]),
        "JAX_CPU_COLLECTIVES_IMPLEMENTATION": "gloo",
        "JAX_COORDINATOR_ADDRESS": f"127.0.0.1:{port}",
        "JAX_NUM_PROCESSES": str(num_processes),
        "JAX_PROCESS_ID": str(process_id),
        "PYTHONUNBUFFERED": "1",
    })
    # The children import this checkout's physics_lm, whatever the caller's cwd.
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    return env


def command(flags: Sequence[str], python: str = sys.executable) -> list[str]:
    return [python, "-m", "physics_lm.main", *flags, "--config.mesh.distributed=True"]


def exit_code(returncodes: Sequence[int]) -> int:
    """The worst child's: a signal death (-S) counts as 128+S, then the largest code wins."""
    return max((128 - c if c < 0 else c) for c in returncodes) if returncodes else 0


def _pump(proc: subprocess.Popen, prefix: str, lock: threading.Lock) -> None:
    for line in proc.stdout:  # type: ignore[union-attr]
        with lock:
            sys.stdout.write(f"{prefix}{line}")
            sys.stdout.flush()


def run(flags: Sequence[str], *, num_processes: int, devices_per_process: int,
        port: int = 0, grace_s: float = 120.0) -> int:
    """Starts the processes, relays their output and signals; returns the worst exit code."""
    port = port or free_port()
    cmd = command(flags)
    procs: list[subprocess.Popen] = []
    lock = threading.Lock()
    pumps = []
    for i in range(num_processes):
        p = subprocess.Popen(cmd, env=process_env(i, num_processes, devices_per_process, port),
                             cwd=os.getcwd(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             text=True, start_new_session=True)
        procs.append(p)
        pumps.append(threading.Thread(target=_pump, args=(p, f"[p{i}] ", lock), daemon=True))
        pumps[-1].start()
    print(f"multihost: {num_processes} processes x {devices_per_process} CPU devices, "
          f"coordinator 127.0.0.1:{port}, pids {[p.pid for p in procs]}", flush=True)
    deadline: list[float] = []

    def stop(signum: int, frame) -> None:
        print(f"multihost: signal {signum}: SIGTERM to every process", flush=True)
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        deadline[:] = deadline or [time.monotonic() + grace_s]

    old = {s: signal.signal(s, stop) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        while any(p.poll() is None for p in procs):
            if not deadline and any(p.returncode not in (None, 0) for p in procs):
                deadline.append(time.monotonic() + grace_s)  # one failed: the rest may hang
            if deadline and time.monotonic() > deadline[0]:
                for p in procs:
                    if p.poll() is None:
                        print(f"multihost: pid {p.pid} still running after {grace_s}s: "
                              "SIGKILL", flush=True)
                        p.kill()
                deadline[0] = float("inf")
            time.sleep(0.1)
    finally:
        for s, h in old.items():
            signal.signal(s, h)
        for t in pumps:
            t.join(timeout=5)
    codes = [p.returncode for p in procs]
    print(f"multihost: exit codes {codes}", flush=True)
    return exit_code(codes)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    flags = argv[argv.index("--") + 1:] if "--" in argv else []
    own = argv[:argv.index("--")] if "--" in argv else argv
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--num_processes", type=int, default=2)
    parser.add_argument("--devices_per_process", type=int, default=4)
    parser.add_argument("--port", type=int, default=0, help="coordinator port (0 = a free one)")
    parser.add_argument("--grace_s", type=float, default=120.0,
                        help="after a signal or a failed process, SIGKILL the rest this late")
    args = parser.parse_args(own)
    if not flags:
        parser.error("give physics_lm.main's flags after --")
    return run(flags, num_processes=args.num_processes,
               devices_per_process=args.devices_per_process, port=args.port,
               grace_s=args.grace_s)


if __name__ == "__main__":
    sys.exit(main())
