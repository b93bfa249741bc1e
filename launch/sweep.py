"""Runs the entries of a config file's `sweep(add)`: N at once, on this machine or as one
pod/cluster job each; rerunning the same command resumes the sweep.

  python -m physics_lm.launch.sweep --config=configs/cfg.py[:ARG] --root=runs/part1 \
      [--parallel=N] [--only=NAME,...] [--skip=NAME,...] [--launcher=local|tpu_pod|xpk|slurm \
      --launcher_arg=KEY=VALUE ...] [--status] [--dry_run] [-- --config.train.num_steps=...]

Each entry becomes `--config.<key>=<value>` overrides and its own workdir `ROOT/<name>`, the
name made of the overrides (`grammar=cfg3b_pos=rotary`); `--only`/`--skip` take names or shell
patterns (`'grammar=cfg3b_*'`). Flags after `--` are added to every entry's command. Finished
entries (a checkpoint at train.num_steps) and running ones are skipped, the rest launched
(each resumes from its own checkpoint). `--status` prints not started / running / done / failed
/ stopped with the last step and loss of every entry, read from the workdirs. The launcher
turns each command into what runs it (`launchers.py` documents the interface); each launch's
output goes to `ROOT/<name>/launch.log`. Exit 0 when every selected entry ended well.
"""

from __future__ import annotations

import argparse
import datetime
import fnmatch
import shlex
import signal
import socket
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from physics_lm.configs import load_module
from physics_lm.launch import launchers
from physics_lm.launch import sweep_status as st


class SweepError(ValueError):
    """A bad sweep flag or config file: one line, exit 2."""


def sweep_entries(config_path: str) -> list[dict]:
    """The overrides of every entry, in the order `sweep(add)` adds them."""
    path = config_path.split(":")[0]
    module = load_module(path)
    if not hasattr(module, "sweep"):
        raise SweepError(f"{path} defines no sweep(add)")
    entries: list[dict] = []
    module.sweep(lambda **kw: entries.append(kw))
    return entries


def entry_name(entry: dict) -> str:
    return "_".join(f"{k.split('.')[-1]}={v}" for k, v in entry.items()).replace("/", "-")


def commands(config: str, root: str, extra: list[str]) -> list[tuple[str, list[str]]]:
    """(name, portable training argv) of every entry; argv[0] is `python` (launchers.py)."""
    out = []
    for entry in sweep_entries(config):
        name = entry_name(entry)
        flags = [f"--{k}={v}" for k, v in entry.items()]
        out.append((name, ["python", "-m", "physics_lm.main", f"--config={config}", *flags,
                           f"--workdir={Path(root) / name}", *extra]))
    return out


def select(names: list[str], only: str, skip: str) -> list[str]:
    """Names kept by --only / --skip (comma-separated names or shell patterns)."""
    def patterns(text: str, flag: str) -> list[str]:
        pats = [p for p in text.split(",") if p]
        for p in pats:
            if not fnmatch.filter(names, p):
                raise SweepError(f"{flag}={p} matches no entry; entries: {', '.join(names)}")
        return pats

    keep, drop = patterns(only, "--only"), patterns(skip, "--skip")
    return [n for n in names if (not keep or any(fnmatch.fnmatch(n, p) for p in keep))
            and not any(fnmatch.fnmatch(n, p) for p in drop)]


class Runner:
    """Runs entries, `parallel` at a time; Ctrl-C sends SIGTERM to every child (the trainer
    saves a checkpoint and exits), waits for them, and leaves the sweep resumable."""

    def __init__(self) -> None:
        self._children: set[subprocess.Popen] = set()
        self._lock = threading.Lock()
        self._stopping = False

    def run_entry(self, name: str, cmds: list[list[str]], workdir: Path) -> int:
        if self._stopping:  # interrupted before this entry started: leave no record
            return 130
        workdir.mkdir(parents=True, exist_ok=True)
        record = {"command": cmds, "host": socket.gethostname(), "pid": None,
                  "started": _now(), "returncode": None}
        print(f"[{name}] start: {' && '.join(shlex.join(c) for c in cmds)}  "
              f"(log: {workdir / st.LOG})", flush=True)
        code = 0
        with (workdir / st.LOG).open("a") as log:
            for cmd in cmds:
                with self._lock:
                    if self._stopping:  # stopped between two commands of one entry
                        code = -signal.SIGTERM
                        break
                    # Own session: a terminal's Ctrl-C reaches only the runner, which stops
                    # the children with SIGTERM (the trainer's clean-exit signal).
                    try:
                        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                                stdin=subprocess.DEVNULL, start_new_session=True)
                    except OSError as e:  # e.g. the launcher's tool is not installed here
                        log.write(f"cannot run {shlex.join(cmd)}: {e}\n")
                        code = 127
                        break
                    self._children.add(proc)
                st.write_record(workdir, {**record, "pid": proc.pid})
                code = proc.wait()
                with self._lock:
                    self._children.discard(proc)
                if code:
                    break
        st.write_record(workdir, {**record, "pid": None, "returncode": code, "ended": _now()})
        if code == 0:  # a clean exit is not always the end: SIGTERM saves and exits too
            row = st.entry_status(name, workdir)
            print(f"[{name}] {row.state} at step {row.step}/{row.num_steps}", flush=True)
        else:
            print(f"[{name}] FAILED (exit {code})", flush=True)
            tail = (workdir / st.LOG).read_text(errors="replace").splitlines()[-5:]
            print("\n".join(f"[{name}]   {line}" for line in tail), flush=True)
        return code

    def stop(self) -> None:
        with self._lock:
            self._stopping = True
            for proc in self._children:
                proc.send_signal(signal.SIGTERM)

    def run(self, jobs: list[tuple[str, list[list[str]], Path]], parallel: int) -> int:
        failed = 0
        with ThreadPoolExecutor(max_workers=parallel) as pool:
            futures = [pool.submit(self.run_entry, *job) for job in jobs]
            try:
                for f in futures:
                    failed += bool(f.result())
            except KeyboardInterrupt:
                print("interrupted: stopping every run (each saves a checkpoint); rerun the "
                      "same command to resume", file=sys.stderr, flush=True)
                self.stop()
                for f in futures:
                    f.cancel()
                return 130
        return 1 if failed else 0


def _now() -> str:
    return datetime.datetime.now().astimezone().isoformat(timespec="seconds")


def parse(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    """The sweep's own flags, and the overrides after `--` (for every entry)."""
    extra: list[str] = []
    if "--" in argv:
        i = argv.index("--")
        argv, extra = argv[:i], argv[i + 1:]
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", required=True, help="config file[:arg] with a sweep(add)")
    p.add_argument("--root", required=True, help="one workdir per entry under it")
    p.add_argument("--parallel", type=int, default=1, help="entries running at once")
    p.add_argument("--only", default="", help="names or patterns, comma-separated")
    p.add_argument("--skip", default="", help="names or patterns, comma-separated")
    p.add_argument("--launcher", default="local", help=", ".join(launchers.LAUNCHERS))
    p.add_argument("--launcher_arg", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--status", action="store_true", help="print the table and exit")
    p.add_argument("--dry_run", action="store_true", help="print the commands, run nothing")
    args = p.parse_args(argv)
    if args.parallel < 1:
        p.error(f"--parallel={args.parallel}: must be >= 1")
    return args, extra


def main(argv: list[str] | None = None) -> int:
    args, extra = parse(sys.argv[1:] if argv is None else argv)
    try:
        entries = commands(args.config, args.root, extra)
        names = select([n for n, _ in entries], args.only, args.skip)
    except (SweepError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    chosen = [(n, a, Path(args.root) / n) for n, a in entries if n in names]
    if args.status:
        print(st.table([st.entry_status(n, w) for n, _, w in chosen]))
        return 0
    try:
        launcher = launchers.get(args.launcher)
        launcher_args = launchers.parse_args(args.launcher_arg)
        planned = [(n, launcher(a, **launcher_args), w) for n, a, w in chosen]
    except (launchers.LauncherError, TypeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.dry_run:
        print("\n".join(shlex.join(c) for _, cmds, _ in planned for c in cmds))
        return 0
    jobs = []
    for name, cmds, workdir in planned:
        state = st.entry_status(name, workdir).state
        if state in ("done", "running"):
            print(f"[{name}] skipped: {state}", flush=True)
        else:
            jobs.append((name, cmds, workdir))
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # stop like Ctrl-C
    code = Runner().run(jobs, args.parallel)
    print(st.table([st.entry_status(n, w) for n, _, w in chosen]), flush=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
