"""Plots of attention/cfg.json. matplotlib is optional: without it they are skipped with a note."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from absl import logging

MODELS = ("trained", "control")


def write_plots(doc: dict[str, Any], out_dir: Path) -> list[str]:
    """Boundary-to-boundary heatmaps and position-bias curves; returns the written paths."""
    try:
        import matplotlib

        matplotlib.use("Agg")  # no display on training hosts
        import matplotlib.pyplot as plt
    except ImportError:
        logging.warning("matplotlib is not installed: skipping the attention plots (the numbers "
                        "are in %s under 'heatmap' and 'position_bias')", out_dir / "cfg.json")
        return []
    return [_heatmap(plt, doc, out_dir / "cfg_attention_heatmap.png"),
            _position_bias(plt, doc, out_dir / "cfg_position_bias.png")]


def _heatmap(plt: Any, doc: dict[str, Any], path: Path) -> str:
    """Rows: trained, control; columns: layers; each panel ℓ (query end) x ℓ' (key end)."""
    levels, n_layers = doc["levels"], doc["num_layers"]
    grids = {m: np.array(doc["heatmap"][m], dtype=float) for m in MODELS}
    finite = np.concatenate([g[np.isfinite(g)] for g in grids.values()])
    vmax = max(float(np.abs(finite).max()) if finite.size else 1.0, 1e-3)
    size = 0.45 * len(levels) + 0.6
    fig, axes = plt.subplots(len(MODELS), n_layers, squeeze=False, layout="constrained",
                             figsize=(1.0 + size * n_layers, 0.6 + size * len(MODELS)))
    for r, m in enumerate(MODELS):
        for layer in range(n_layers):
            ax, grid = axes[r][layer], grids[m][layer]
            im = ax.imshow(grid, vmin=-vmax, vmax=vmax, cmap="RdBu_r")
            for (i, j), v in np.ndenumerate(grid):
                ax.text(j, i, "" if np.isnan(v) else f"{v:.2f}", ha="center", va="center",
                        fontsize=5, color="w" if abs(v) > 0.6 * vmax else "k")
            ax.set_title(f"{m} · layer {layer}", fontsize=7)
            ax.set_xticks(range(len(levels)), [f"ℓ'={l}" for l in levels], fontsize=5)
            ax.set_yticks(range(len(levels)), [f"ℓ={l}" for l in levels], fontsize=5)
    fig.colorbar(im, ax=axes, shrink=0.6,
                 label="attention − position bias, NT end → most adjacent NT end (max head)")
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return str(path)


def _position_bias(plt: Any, doc: dict[str, Any], path: Path) -> str:
    """Mean over heads of B(d) per layer, one panel per model."""
    fig, axes = plt.subplots(1, len(MODELS), figsize=(4.5 * len(MODELS), 3.2), squeeze=False,
                             sharey=True, layout="constrained")
    for ax, m in zip(axes[0], MODELS, strict=True):
        bias = np.array(doc[m]["position_bias"], dtype=float)  # [layer, head, d]
        for layer, curve in enumerate(np.nanmean(bias, axis=1)):
            ax.plot(curve, label=f"layer {layer}")
        ax.set_title(m)
        ax.set_xlabel("distance d = i − j")
        ax.set_yscale("log")
    axes[0][0].set_ylabel("mean attention weight (heads averaged)")
    axes[0][-1].legend(fontsize=6)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return str(path)
