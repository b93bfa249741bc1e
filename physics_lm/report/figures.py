"""The report's figures (PNG, matplotlib with the Agg backend); each is skipped without data."""

from __future__ import annotations

from pathlib import Path

from physics_lm.report import tables
from physics_lm.report.runs import Run


def _plt():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def igsm_cells(runs: list[Run], path: Path) -> bool:
    """Part 2.1: accuracy per cell, one line per plain model run."""
    plain = [r for r in runs if tables.is_plain(r) and r.doc("eval", "igsm")]
    cells = tables.cells_of(plain)
    if not cells:
        return False
    plt = _plt()
    fig, ax = plt.subplots(figsize=(1.5 + 0.9 * len(cells), 3.2), layout="constrained")
    for r in plain:
        acc = [tables.cell_acc(r, c) for c in cells]
        ax.plot(range(len(cells)), [float("nan") if a is None else a for a in acc], marker="o",
                label=f"{r.name} ({r.model_name})")
    ax.set_xticks(range(len(cells)), cells)
    ax.set(ylim=(-0.02, 1.02), ylabel="accuracy", title="Part 2.1: accuracy per cell")
    ax.legend(fontsize=6)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def retry_rate(runs: list[Run], path: Path) -> bool:
    """Part 2.2: accuracy (mean over cells) vs retry rate, one line per (retry kind, mask)."""
    mine = [r for r in runs if r.family == "igsm" and not r.cfg("train", "init_from")
            and r.doc("eval", "igsm")]
    if not any(r.task("retry", "none") != "none" for r in mine):
        return False
    cells = tables.cells_of(mine)
    lines: dict[tuple[str, str], list[tuple[float, float]]] = {}
    for r in mine:
        kind, rate, mask = tables.retry_key(r)
        acc = tables.mean([tables.cell_acc(r, c) for c in cells])
        if acc is not None:
            lines.setdefault((kind, mask), []).append((rate, acc))
    plt = _plt()
    fig, ax = plt.subplots(figsize=(4.5, 3.2), layout="constrained")
    for (kind, mask), pts in sorted(lines.items()):
        pts.sort()
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=f"{kind}, mask {mask}")
    ax.set(xlabel="retry rate", ylabel="accuracy (mean over cells)", ylim=(-0.02, 1.02),
           title="Part 2.2: accuracy vs retry rate")
    ax.legend(fontsize=6)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True
