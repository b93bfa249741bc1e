"""Learning curves (accuracy, KL, held-out loss against tokens seen) from the trainer's records.

A run trained with `train.analysis_every=N` logs, every N steps, the eval's scalars to
metrics.jsonl as `eval/<path>` (cfg: generation accuracy per prefix cut and temperature, KL;
iGSM: accuracy per eval cell) and, every `train.eval_every` steps, `eval_loss` (held-out loss;
for iGSM on the test template bins). This module reads them back as
points on a tokens axis: tokens per step = `train.batch_size` × `task.seq_len`, the token slots
a step trains on (with the default `packing="pack"` every slot is a training token; with
`"single"` the padding is counted too).

A run started with `train.init_from=SOURCE[:STEP]` continues its source's curve: its tokens are
counted from the source's (STEP, or else the source's latest checkpoint, the one a fresh fork
loads, × the source's tokens per step), so a fork that extends a run reads as one curve. The
fork has its own warm-up and schedule; its first points therefore show the fresh warm-up. A fork
with `train.init_from_state=True` numbers its steps on from the source's (its step STEP + k is
the k-th step after the fork), so the fork's own steps before STEP are not counted twice.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from physics_lm.config import parse_init_from
from physics_lm.report.runs import Run

PREFIX = "eval/"
CELLS = f"{PREFIX}cells/"  # iGSM: eval/cells/<cell>/accuracy, .../n


@dataclasses.dataclass(frozen=True)
class Point:
    """One step of a run: what its periodic evals measured there (None: not measured)."""

    step: int
    tokens: int  # counted from the start of the first run in the init_from chain
    eval_loss: float | None = None
    kl: float | None = None
    cut0: float | None = None  # generation accuracy from BOS (T = 1 where measured)
    cut50: float | None = None
    n: int | None = None  # generations per accuracy
    # iGSM: eval cell -> (accuracy, problems)
    cells: dict[str, tuple[float, int | None]] = dataclasses.field(default_factory=dict)


def read_metrics(workdir: Path) -> list[dict[str, Any]]:
    """metrics.jsonl's records; a truncated last line (a run being written) is skipped."""
    path = Path(workdir) / "metrics.jsonl"
    if not path.is_file():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if isinstance(rec, dict) and isinstance(rec.get("step"), int):
            out.append(rec)
    return out


def tokens_per_step(run: Run) -> int | None:
    batch, seq = run.cfg("train", "batch_size"), run.task("seq_len")
    return batch * seq if isinstance(batch, int) and isinstance(seq, int) else None


def _accuracy_key(rec: dict[str, Any], cut: str) -> str | None:
    """The accuracy at T = 1 where it was measured, else at the first temperature logged."""
    keys = sorted(k for k in rec if k.startswith(f"{PREFIX}generation/{cut}/")
                  and k.endswith("/accuracy"))
    t1 = f"{PREFIX}generation/{cut}/T1/accuracy"
    return t1 if t1 in keys else (keys[0] if keys else None)


def points(records: list[dict[str, Any]], per_step: int, offset: int = 0) -> list[Point]:
    """The steps with a held-out loss or a periodic eval, merged per step, in step order."""
    by_step: dict[int, dict[str, Any]] = {}
    for rec in records:
        step, got = rec["step"], {}
        if isinstance(rec.get("eval_loss"), int | float):
            got["eval_loss"] = float(rec["eval_loss"])
        if isinstance(rec.get(f"{PREFIX}distribution/kl"), int | float):
            got["kl"] = float(rec[f"{PREFIX}distribution/kl"])
        for cut in ("cut0", "cut50"):
            if (key := _accuracy_key(rec, cut)) is not None and rec[key] is not None:
                got[cut] = float(rec[key])
                n = rec.get(key.removesuffix("accuracy") + "n")
                got["n"] = int(n) if isinstance(n, int | float) else None
        cells = {}
        for key, acc in rec.items():
            if key.startswith(CELLS) and key.endswith("/accuracy") and isinstance(acc,
                                                                                int | float):
                cell = key.removeprefix(CELLS).removesuffix("/accuracy")
                n = rec.get(f"{CELLS}{cell}/n")
                cells[cell] = (float(acc), int(n) if isinstance(n, int | float) else None)
        if cells:
            got["cells"] = cells
        if got:
            by_step.setdefault(step, {}).update(got)
    return [Point(step=s, tokens=offset + s * per_step, **v) for s, v in sorted(by_step.items())]


def _latest_checkpoint(workdir: Path) -> int | None:
    steps = [int(p.name) for p in (workdir / "checkpoints").glob("*") if p.name.isdigit()]
    return max(steps) if steps else None


@dataclasses.dataclass(frozen=True)
class Curve:
    """A run's own points, and the chain of sources it continues (oldest first)."""

    run: Run
    points: list[Point]
    sources: list[tuple[str, list[Point]]]  # (source workdir name, its points up to the fork)
    chain_found: bool = True  # False: a source is unreadable, tokens count from the fork


def _start(run: Run, depth: int = 0) -> tuple[int, list[tuple[str, list[Point]]], bool]:
    """(tokens seen before `run`'s step 0, the sources' points, whether the chain resolved)."""
    init_from = run.cfg("train", "init_from")
    if not isinstance(init_from, str) or not init_from:
        return 0, [], True
    src_dir, step = parse_init_from(init_from)
    try:
        src = Run(src_dir.name, json.loads((src_dir / "config.json").read_text()), {}, src_dir)
    except (OSError, ValueError):
        return 0, [], False
    step = step if step is not None else _latest_checkpoint(src_dir)
    per_step = tokens_per_step(src)
    if step is None or per_step is None or depth >= 16:
        return 0, [], False
    offset, sources, found = _start(src, depth + 1)
    mine = [p for p in points(read_metrics(src_dir), per_step, offset) if p.step <= step]
    start = offset + step * per_step
    if run.cfg("train", "init_from_state") is True:  # its steps go on from `step`
        start -= step * (tokens_per_step(run) or per_step)
    return start, [*sources, (src_dir.name, mine)], found


def curve(run: Run) -> Curve | None:
    """`run`'s learning curve on the tokens axis of its init_from chain; None without data."""
    per_step = tokens_per_step(run)
    if run.path is None or per_step is None:
        return None
    offset, sources, found = _start(run)
    pts = points(read_metrics(run.path), per_step, offset)
    return Curve(run, pts, sources, found) if pts else None
