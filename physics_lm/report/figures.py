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


def learning_curve(runs: list[Run], path: Path) -> bool:
    """Part 1: accuracy from BOS (T = 1) and KL against tokens seen, one line per cfg run. A
    fork's line starts at its source's last point before the fork; a source outside the root
    is drawn dashed grey."""
    mine = [c for c in tables.curves_of(runs, "cfg")
            if any(p.cut0 is not None or p.kl is not None for p in c.points)]
    if not mine:
        return False
    inside = {r.path.name for r in runs if r.path is not None}
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4), layout="constrained")
    for ax, key in zip(axes, ("cut0", "kl"), strict=True):
        xy = lambda pts, key=key: [(p.tokens / 1e6, getattr(p, key)) for p in pts
                                   if getattr(p, key) is not None]
        outside: dict[str, list] = {}
        for c in mine:
            before = [q for _, pts in c.sources[-1:] for q in xy(pts)]
            outside.update({n: xy(pts) for n, pts in c.sources if n not in inside})
            if own := before[-1:] + xy(c.points):
                ax.plot(*zip(*own, strict=True), marker="o", label=c.run.name)
        for pts in outside.values():
            if pts:
                ax.plot(*zip(*pts, strict=True), ls="--", color="grey", marker=".")
    axes[0].set(xscale="log", xlabel="tokens seen (M)", ylabel="accuracy cut0 (T = 1)",
                ylim=(-0.02, 1.02), title="Part 1: generation accuracy")
    axes[1].set(xscale="log", yscale="log", xlabel="tokens seen (M)",
                ylabel="KL(true || model)", title="Part 1: KL per token")
    axes[0].legend(fontsize=6)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def igsm_learning_curve(runs: list[Run], path: Path) -> bool:
    """Part 2.1: accuracy per eval cell against tokens seen, one panel per cell, one line per
    iGSM run (its periodic evals; a fork's tokens continue its source's)."""
    mine = tables.curves_of(runs, "igsm")
    cells = list(dict.fromkeys(k for c in mine for p in c.points for k in p.cells))
    if not cells:
        return False
    plt = _plt()
    fig, axes = plt.subplots(1, len(cells), figsize=(0.5 + 3.6 * len(cells), 3.2),
                             layout="constrained", squeeze=False)
    for ax, cell in zip(axes[0], cells, strict=True):
        for c in mine:
            pts = [(p.tokens / 1e6, p.cells[cell][0]) for p in c.points if cell in p.cells]
            if pts:
                ax.plot(*zip(*pts, strict=True), marker="o", label=c.run.name)
        ax.set(xlabel="tokens seen (M)", ylabel="accuracy", ylim=(-0.02, 1.02), title=cell)
    axes[0][0].legend(fontsize=6)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True
