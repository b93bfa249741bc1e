"""Plots of eval/igsm.json: accuracy by cell (the paper's accuracy-by-op figure) and error kinds.

matplotlib is optional: without it the plots are skipped with a log line.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from absl import logging


def write_plots(doc: dict[str, Any], out_dir: Path) -> list[str]:
    """Writes igsm_accuracy.png and igsm_errors.png; returns the written paths."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        logging.info("matplotlib is not installed: skipping iGSM plots (numbers in igsm.json)")
        return []
    out_dir = Path(out_dir)
    runs = {"model": doc["cells"], **({"control": doc["control"]["cells"]}
                                      if "control" in doc else {})}
    names = list(doc["cells"])
    x = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(1.2 + 0.9 * len(names), 3.6), layout="constrained")
    width = 0.8 / len(runs)
    for i, (run, cells) in enumerate(runs.items()):
        acc = np.array([cells[c]["accuracy"] for c in names], float)
        err = np.array([[acc[j] - cells[c]["acc_lo"], cells[c]["acc_hi"] - acc[j]]
                        for j, c in enumerate(names)]).T
        colors = ["tab:gray" if cells[c].get("templates") == "seen" else
                  "tab:blue" if cells[c]["in_distribution"] else "tab:orange" for c in names]
        ax.bar(x + (i - (len(runs) - 1) / 2) * width, acc, width, yerr=err, capsize=2,
               color=colors, alpha=1.0 if run == "model" else 0.35, label=run)
    ax.set_xticks(x, names, rotation=30, fontsize=8)
    ax.set_ylim(0, 1)
    ax.set_ylabel("accuracy (95% CI)")
    ax.set_title("iGSM accuracy by cell (blue: in distribution, orange: out of distribution, "
                 "gray: training templates)",
                 fontsize=9)
    ax.legend(fontsize=7)
    paths = [str(out_dir / "igsm_accuracy.png")]
    fig.savefig(paths[0], dpi=120)
    plt.close(fig)

    kinds = sorted({k for c in names for k in doc["cells"][c]["error_kinds"]})
    fig, ax = plt.subplots(figsize=(1.2 + 0.9 * len(names), 3.6), layout="constrained")
    bottom = np.zeros(len(names))
    for kind in kinds:
        share = np.array([doc["cells"][c]["error_kinds"].get(kind, 0) / doc["cells"][c]["n"]
                          for c in names])
        ax.bar(x, share, 0.7, bottom=bottom, label=kind)
        bottom += share
    ax.set_xticks(x, names, rotation=30, fontsize=8)
    ax.set_ylim(0, 1)
    ax.set_ylabel("share of generations")
    ax.set_title("first-error kind of wrong generations", fontsize=9)
    ax.legend(fontsize=7, ncol=2)
    paths.append(str(out_dir / "igsm_errors.png"))
    fig.savefig(paths[1], dpi=120)
    plt.close(fig)
    return paths
