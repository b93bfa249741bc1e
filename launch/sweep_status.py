"""The state of one sweep entry, read from its workdir (the workdir *is* the run).

  not started  nothing in the workdir
  running      the sweep's record names a live process on this host
  done         a checkpoint at `train.num_steps` (the trainer always saves the last step)
  failed       the last launch exited non-zero and the run is not done
  stopped      started, not done, not running, no failure recorded (preempted, interrupted,
               or launched by hand): rerunning the sweep resumes it

The sweep runner writes `launch.json` (command, pid, host, start; then exit code and end) and
`launch.log` (the launch's output) into the workdir; step and loss come from the trainer's
`metrics.jsonl` and `checkpoints/<step>`.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import socket
from pathlib import Path
from typing import Any

RECORD, LOG = "launch.json", "launch.log"
STATES = ("not started", "running", "done", "failed", "stopped")


@dataclasses.dataclass(frozen=True)
class EntryStatus:
    name: str
    state: str
    step: int | None = None
    num_steps: int | None = None
    loss: float | None = None
    eval_loss: float | None = None
    note: str = ""


def read_record(workdir: Path) -> dict[str, Any] | None:
    try:
        return json.loads((workdir / RECORD).read_text())
    except (OSError, ValueError):
        return None


def write_record(workdir: Path, record: dict[str, Any]) -> None:
    """Atomic (temp + rename): `--status` in another shell never reads half a record."""
    tmp = workdir / f"{RECORD}.tmp"
    tmp.write_text(json.dumps(record, indent=2))
    tmp.replace(workdir / RECORD)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process holds the pid
        return True
    return True


def checkpoint_steps(workdir: Path) -> list[int]:
    """Finished checkpoints (orbax writes a temporary directory, renamed when complete)."""
    root = workdir / "checkpoints"
    if not root.is_dir():
        return []
    return sorted(int(p.name) for p in root.iterdir() if p.is_dir() and p.name.isdigit())


def last_metrics(workdir: Path) -> tuple[int | None, float | None, float | None]:
    """(last logged step, last train loss, last eval loss) of `metrics.jsonl`."""
    step = loss = eval_loss = None
    try:
        lines = (workdir / "metrics.jsonl").read_text().splitlines()
    except OSError:
        return step, loss, eval_loss
    for line in lines:
        try:
            row = json.loads(line)
        except ValueError:  # a line cut by a crash
            continue
        step = max(step or 0, int(row.get("step", 0)))
        loss = row.get("loss", loss)
        eval_loss = row.get("eval_loss", eval_loss)
    return step, loss, eval_loss


def _num_steps(workdir: Path) -> int | None:
    try:
        return int(json.loads((workdir / "config.json").read_text())["train"]["num_steps"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def entry_status(name: str, workdir: Path) -> EntryStatus:
    record = read_record(workdir)
    num_steps = _num_steps(workdir)
    ckpts = checkpoint_steps(workdir)
    step, loss, eval_loss = last_metrics(workdir)
    if ckpts:
        step = max(step or 0, ckpts[-1])
    common = dict(step=step, num_steps=num_steps, loss=loss, eval_loss=eval_loss)
    if record is None and num_steps is None and not ckpts:
        return EntryStatus(name, "not started", **common)
    if num_steps is not None and ckpts and ckpts[-1] >= num_steps:
        return EntryStatus(name, "done", **common)
    if record is not None and record.get("returncode") is None:
        host = record.get("host")
        if host != socket.gethostname():
            return EntryStatus(name, "running", **common, note=f"on {host} (not checked)")
        if _alive(int(record.get("pid", 0))):
            return EntryStatus(name, "running", **common, note=f"pid {record['pid']}")
        return EntryStatus(name, "stopped", **common, note="the launch died without a record")
    if record is not None and record.get("returncode"):
        return EntryStatus(name, "failed", **common,
                           note=f"exit {record['returncode']}, see {workdir / LOG}")
    return EntryStatus(name, "stopped", **common)


def _num(x: float | None) -> str:
    return "-" if x is None or not math.isfinite(x) else f"{x:.4f}"


def table(rows: list[EntryStatus]) -> str:
    """One line per entry, then the count per state."""
    width = max([len(r.name) for r in rows] + [5])
    out = [f"{'entry':<{width}}  {'status':<11}  {'step':>15}  {'loss':>8}  {'eval':>8}  note"]
    for r in rows:
        step = "-" if r.step is None else f"{r.step}/{r.num_steps or '?'}"
        out.append(f"{r.name:<{width}}  {r.state:<11}  {step:>15}  {_num(r.loss):>8}  "
                   f"{_num(r.eval_loss):>8}  {r.note}".rstrip())
    counts = {s: sum(r.state == s for r in rows) for s in STATES}
    out.append(", ".join(f"{n} {s}" for s, n in counts.items() if n))
    return "\n".join(out)
