"""Heatmaps of `probe/igsm.json`: accuracy by task × split (trained | control | majority), and
the depth study (layer × distance to the question, Fig. 10 of Part 2.1)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from absl import logging


def _grid(ax, grid: np.ndarray, rows: list[str], cols: list[str], title: str) -> Any:
    im = ax.imshow(grid, vmin=0.0, vmax=1.0, cmap="viridis", aspect="auto")
    for (i, j), v in np.ndenumerate(grid):
        ax.text(j, i, "" if np.isnan(v) else f"{v:.2f}", ha="center", va="center", fontsize=7,
                color="w" if v < 0.6 else "k")
    ax.set_title(title, fontsize=9)
    ax.set_xticks(range(len(cols)), cols, fontsize=7, rotation=30)
    ax.set_yticks(range(len(rows)), rows, fontsize=7)
    return im


def _val(x: Any) -> float:
    return np.nan if x is None else float(x)


def write_all(doc: dict[str, Any], out_dir: Path) -> list[Path]:
    """Writes the heatmaps (none, with a log line, when matplotlib is missing)."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        logging.warning("matplotlib is not installed: no probe plots (the numbers are in "
                        "igsm.json)")
        return []
    tasks, splits, res = doc["tasks"], doc["splits"], doc["results"]
    panels = [m for m in ("trained", "control") if m in res[tasks[0]][splits[0]]] + ["majority"]
    size = (1.5 + 0.9 * len(splits) * len(panels), 0.9 + 0.4 * len(tasks))
    fig, axes = plt.subplots(1, len(panels), squeeze=False, layout="constrained", figsize=size)
    for ax, model in zip(axes[0], panels, strict=True):
        grid = np.array([[_val(res[t][s]["majority"] if model == "majority"
                               else res[t][s][model]["acc"]) for s in splits] for t in tasks])
        im = _grid(ax, grid, tasks, splits, f"V-probe accuracy: {model}")
    fig.colorbar(im, ax=axes, shrink=0.7)
    paths = [out_dir / "probe_accuracy.png"]
    fig.savefig(paths[-1], dpi=120)
    plt.close(fig)
    depth = doc.get("depth")
    if depth:
        models = [m for m in ("trained", "control") if m in depth]
        layers = [n.replace("blocks.", "").replace(".resid_post", "") for n in depth["layers"]]
        fig, axes = plt.subplots(1, len(models), squeeze=False, layout="constrained",
                                 figsize=(1.5 + 4.0 * len(models), 1.0 + 0.3 * len(layers)))
        cols = [f"t={d}" if d < len(depth["distances"]) - 1 else "far"
                for d in depth["distances"]]
        for ax, model in zip(axes[0], models, strict=True):
            grid = np.array([[_val(v) for v in row] for row in depth[model]])
            im = _grid(ax, grid, layers, cols, f"nece accuracy by layer: {model}")
        fig.colorbar(im, ax=axes, shrink=0.7)
        paths.append(out_dir / "probe_depth.png")
        fig.savefig(paths[-1], dpi=120)
        plt.close(fig)
    return paths
