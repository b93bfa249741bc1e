"""Plots of eval/cfg.json. matplotlib is optional: without it the plots are skipped with a note."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from absl import logging


def write_plots(result: dict[str, Any], out_dir: Path) -> list[str]:
    """Writes accuracy bars, KL-by-position curves and forbidden mass by NT level; returns the
    written paths ([] if none).

    `result` is `evaluate_cfg`'s dict, optionally with a "control" entry of the same form.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")  # no display on training hosts
        import matplotlib.pyplot as plt
    except ImportError:
        logging.info("matplotlib is not installed: skipping eval plots (metrics are in cfg.json)")
        return []
    runs = {"model": result, **({"control": result["control"]} if "control" in result else {})}
    written = []

    fig, ax = plt.subplots(figsize=(8, 3.5))
    bars = {}
    for name, res in runs.items():
        labels, values = [], []
        for setting, by_t in res["generation"].items():
            for t, m in by_t.items():
                labels.append(f"{setting} {t}")
                values.append(m["accuracy"])
        for t, m in {k: v for k, v in res.get("robustness", {}).items()
                     if isinstance(v, dict)}.items():
            labels += [f"corrupted {t}", f"clean {t}"]
            values += [m["corrupted_acc"], m["clean_acc"]]
        bars[name] = values
    _grouped_bars(ax, bars, labels, rotation=30, ha="right")
    ax.set_ylim(0, 1)
    ax.set_ylabel("generation accuracy")
    written.append(_save(plt, fig, ax, out_dir / "cfg_accuracy.png"))

    fig, ax = plt.subplots(figsize=(8, 3.5))
    for name, res in runs.items():
        ax.plot(res["distribution"]["kl_by_position"], label=name)
    ax.set_xlabel("position r (row of the true next-token distribution)")
    ax.set_ylabel("KL(true || model)")
    ax.set_yscale("log")
    written.append(_save(plt, fig, ax, out_dir / "cfg_kl_by_position.png"))

    # Where strings break: per-row forbidden mass by the NT level the row's token opens.
    fig, ax = plt.subplots(figsize=(8, 3.5))
    groups = {name: res["distribution"]["by_boundary"] for name, res in runs.items()}
    _grouped_bars(ax, {name: [g["forbidden_mass"] or 0.0 for g in by.values()]
                       for name, by in groups.items()}, list(groups["model"]))
    ax.set_ylabel("P(forbidden token) per row")
    ax.set_yscale("log")
    written.append(_save(plt, fig, ax, out_dir / "cfg_forbidden_by_level.png"))
    return written


def _grouped_bars(ax, values: dict[str, list[float]], labels: list[str], **tick_kw) -> None:
    """One bar per (label, run), the runs side by side within each label."""
    width = 0.8 / len(values)
    for i, (name, vals) in enumerate(values.items()):
        ax.bar([j + i * width for j in range(len(vals))], vals, width, label=name)
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(labels))], labels, **tick_kw)


def _save(plt, fig, ax, path: Path) -> str:
    """Legend, layout, write, close: the same finish for every figure."""
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return str(path)
