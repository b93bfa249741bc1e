"""The papers' tables as Markdown, from `Run`s; a missing value is a gap, never an error."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from physics_lm.report import curves
from physics_lm.report.runs import GAP, Run, get

IGSM_PROBE_TASKS = ("nece", "dep", "known", "value", "can_next", "nece_next")


def fmt(x: Any, digits: int = 3) -> str:
    return GAP if not isinstance(x, int | float) or isinstance(x, bool) else f"{x:.{digits}f}"


def with_control(trained: Any, control: Any) -> str:
    """"0.912 (ctl 0.403)": the paper's random-init control beside each probe number."""
    return GAP if trained is None else f"{fmt(trained)} (ctl {fmt(control)})"


def markdown(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    if not rows:
        return "_no runs with these results under the root_\n"
    out = ["| " + " | ".join(map(str, header)) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(out) + "\n"


def mean(xs: Sequence[Any]) -> float | None:
    xs = [x for x in xs if isinstance(x, int | float)]
    return float(np.mean(xs)) if xs else None


# -- Part 1 -------------------------------------------------------------------------------------
def _cut0(doc: dict[str, Any] | None) -> float | None:
    temps = get(doc, "generation", "cut0") or {}
    key = "T1" if "T1" in temps else next(iter(temps), None)
    return get(temps, key, "accuracy") if key else None


def part1_generation(runs: list[Run]) -> str:
    """Generation accuracy (cut0, T=1) and KL per grammar x position scheme (mean over seeds)."""
    cfg = [r for r in runs if r.family == "cfg"]
    grammars = sorted({r.task("grammar", GAP) for r in cfg})
    schemes = sorted({r.cfg("model", "pos") or GAP for r in cfg})
    rows = []
    for g in grammars:
        row = [g]
        for pos in schemes:
            mine = [r for r in cfg if r.task("grammar", GAP) == g and (r.cfg("model", "pos") or
                                                                        GAP) == pos]
            acc = mean([_cut0(r.doc("eval", "cfg")) for r in mine])
            kl = mean([get(r.doc("eval", "cfg"), "distribution", "kl") for r in mine])
            row.append(f"{fmt(acc)} / {fmt(kl, 4)}")
        rows.append(row)
    return markdown(["grammar", *(f"{p} (acc / KL)" for p in schemes)], rows)


def part1_probe(runs: list[Run]) -> str:
    """NT-ancestor probe accuracy at NT ends per level (last layer), trained vs random init."""
    rows, levels = [], set()
    for r in runs:
        doc = r.doc("probe", "cfg")
        if r.family != "cfg" or doc is None:
            continue
        results = doc.get("results") or {}
        kind = "multi" if "multi" in results else next(iter(results), None)
        layer = (doc.get("layers") or [None])[-1]
        per = {}
        for lv, targets in (get(results, kind, layer) or {}).items():
            e = targets.get("ancestor") or {}
            per[lv] = with_control(get(e, "trained", "acc_boundary"),
                                   get(e, "control", "acc_boundary"))
        levels |= set(per)
        rows.append((r, kind, per))
    cols = sorted(levels, key=lambda s: int(s.removeprefix("level")))
    return markdown(["run", "grammar", "pos", "probe", *cols],
                    [[r.name, r.task("grammar", GAP), r.cfg("model", "pos") or GAP, kind or GAP,
                      *(per.get(c, GAP) for c in cols)] for r, kind, per in rows])


def part1_learning_curve(runs: list[Run]) -> str:
    """Held-out loss, KL and accuracy against tokens seen, from each cfg run's periodic evals
    (`train.analysis_every`); a fork (`train.init_from`) counts tokens from its source's."""
    rows = []
    for c in curves_of(runs, "cfg"):
        rows += [[_curve_name(c), p.step, f"{p.tokens / 1e6:.1f}", fmt(p.eval_loss),
                  fmt(p.kl, 4), fmt(p.cut0), fmt(p.cut50), GAP if p.n is None else p.n]
                 for p in c.points]
    return markdown(["run", "step", "tokens (M)", "held-out loss", "KL", "acc cut0",
                     "acc cut50", "n"], rows)


def curves_of(runs: list[Run], family: str) -> list[curves.Curve]:
    """The learning curves of the runs of one family that have any."""
    return [c for r in runs if r.family == family and (c := curves.curve(r)) is not None]


def _curve_name(c: curves.Curve) -> str:
    """The run's name; a fork says where its tokens axis starts."""
    src = c.run.cfg("train", "init_from")
    if not src:
        return c.run.name
    return (f"{c.run.name} (from {Path(src).name})" if c.chain_found else
            f"{c.run.name} (from {src}: not found, tokens from the fork)")


def part21_learning_curve(runs: list[Run]) -> str:
    """Held-out loss and accuracy per eval cell against tokens seen, from each iGSM run's
    periodic evals (`train.analysis_every`); each cell's header names its problems per point."""
    mine = curves_of(runs, "igsm")
    cells: dict[str, int | None] = {}
    for c in mine:
        for p in c.points:
            for cell, (_, n) in p.cells.items():
                cells.setdefault(cell, n)
    rows = [[_curve_name(c), p.step, f"{p.tokens / 1e6:.1f}", fmt(p.eval_loss),
             *(fmt(p.cells[k][0]) if k in p.cells else GAP for k in cells)]
            for c in mine for p in c.points]
    return markdown(["run", "step", "tokens (M)", "held-out loss",
                     *(k if n is None else f"{k} (n={n})" for k, n in cells.items())], rows)


# -- Part 2 -------------------------------------------------------------------------------------
def cells_of(runs: list[Run], mode: str = "eval") -> list[str]:
    seen: dict[str, None] = {}
    for r in runs:
        for c in get(r.doc(mode, "igsm"), "cells") or {}:
            seen[c] = None
    return list(seen)


def cell_acc(r: Run, cell: str, key: str = "accuracy") -> Any:
    return get(r.doc("eval", "igsm"), "cells", cell, key)


def is_plain(r: Run) -> bool:
    return r.family == "igsm" and r.task("retry", "none") == "none" and not r.cfg("train",
                                                                                  "init_from")


def part21_cells(runs: list[Run]) -> str:
    """Accuracy per cell per model (greedy unless eval.decoder says otherwise)."""
    plain = sorted((r for r in runs if is_plain(r)),
                   key=lambda r: (r.cfg("model", "num_layers") or 0, r.cfg("model", "d_model")
                                  or 0, r.name))
    cells = cells_of(plain)
    return markdown(["run", "task", "layers x width", "decoder", *cells],
                    [[r.name, f"{r.task('preset', GAP)}_{r.task('fmt', 'pq')}", r.model_name,
                      get(r.doc("eval", "igsm"), "eval_config", "decoder") or GAP,
                      *(fmt(cell_acc(r, c)) for c in cells)] for r in plain])


def part21_depth_width(runs: list[Run]) -> str:
    """The depth-vs-width tables: one per cell (op=M and the OOD cells), layers x width."""
    plain = [r for r in runs if is_plain(r)]
    layers = sorted({r.cfg("model", "num_layers") for r in plain} - {None})
    widths = sorted({r.cfg("model", "d_model") for r in plain} - {None})
    out = []
    def at(cell: str, lay: int, w: int) -> str:
        shape = lambda r: (r.cfg("model", "num_layers"), r.cfg("model", "d_model"))
        return fmt(mean([cell_acc(r, cell) for r in plain if shape(r) == (lay, w)]))

    for cell in [c for c in cells_of(plain) if not c.startswith("op<=")]:
        rows = [[f"{lay} layers", *(at(cell, lay, w) for w in widths)] for lay in layers]
        out.append(f"**{cell}**\n\n" + markdown(["depth \\ width", *map(str, widths)], rows))
    return "\n".join(out) or markdown([], [])


def part21_probe(runs: list[Run]) -> str:
    """V-probe accuracy per task (split "id"), trained vs random init."""
    rows = []
    for r in runs:
        doc = r.doc("probe", "igsm")
        if r.family != "igsm" or doc is None:
            continue
        res = doc.get("results") or {}
        rows.append([r.name, r.model_name, *(with_control(get(res, t, "id", "trained", "acc"),
                                                          get(res, t, "id", "control", "acc"))
                                             for t in IGSM_PROBE_TASKS)])
    return markdown(["run", "layers x width", *IGSM_PROBE_TASKS], rows)


def retry_key(r: Run) -> tuple[str, float, str]:
    return (r.task("retry", "none"), float(r.task("retry_rate", 0.0)),
            r.task("retry_mask", "none"))


def part22_retry(runs: list[Run], key: str = "accuracy", digits: int = 3) -> str:
    """Accuracy (or BACK sentences per generation, key="back_mean") vs retry rate and mask."""
    mine = sorted((r for r in runs if r.family == "igsm" and not r.cfg("train", "init_from")),
                  key=lambda r: (*retry_key(r), r.name))
    mine = [r for r in mine if retry_key(r)[0] != "none" or any(
        retry_key(o)[0] != "none" for o in mine)]  # the no-retry runs are the rate-0 baseline
    cells = cells_of(mine)
    return markdown(["run", "retry", "rate", "mask", *cells],
                    [[r.name, *map(str, retry_key(r)),
                      *(fmt(cell_acc(r, c, key), digits) for c in cells)] for r in mine])


def part22_regret(runs: list[Run]) -> str:
    """Regret vs beam (mode=regret's regret/igsm.json); runs without it are gaps."""
    igsm = [r for r in runs if r.family == "igsm"]
    rows_seen: dict[str, None] = {}
    for r in igsm:
        for row in get(r.doc("regret", "igsm"), "rows") or []:
            rows_seen[row] = None
    cols = list(rows_seen) or ["beam1", "beam32", "regret_v1", "regret_vP"]
    out = []
    for r in igsm:
        doc = r.doc("regret", "igsm")
        cells = get(doc, "cells") or [None]
        for cell in cells:
            out.append([r.name, cell or GAP, *(fmt(get(doc, "table", c, cell, "accuracy"))
                                              for c in cols)])
    return markdown(["run", "cell", *cols], out)


def part22_lora(runs: list[Run]) -> str:
    """Fine-tuning from `train.init_from`: LoRA ranks (qv r / e 2r) vs full fine-tuning."""
    ft = [r for r in runs if r.family == "igsm" and r.cfg("train", "init_from")]

    def ranks(r: Run) -> str:
        q = r.cfg("train", "lora_rank") or 0
        e = r.cfg("train", "lora_embed_rank")
        e = 2 * q if e is None or e < 0 else e
        return "full" if not (q or e) else f"qv {q} / e {e}"

    ft.sort(key=lambda r: (r.cfg("train", "lora_rank") or 0, r.name))
    cells = cells_of(ft)
    return markdown(["run", "fine-tuning", "retry", *cells],
                    [[r.name, ranks(r), r.task("retry", "none"),
                      *(fmt(cell_acc(r, c)) for c in cells)] for r in ft])
