"""Plots of eval/igsm.json: accuracy by cell (the paper's accuracy-by-op figure), error kinds, and
the teacher-forced loss by kind of token.

matplotlib is optional: without it the plots are skipped with a log line.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from absl import logging


def write_plots(doc: dict[str, Any], out_dir: Path) -> list[str]:
    """Writes igsm_accuracy.png, igsm_errors.png and (with `teacher_forced` in the doc)
    igsm_token_kinds.png; returns the written paths."""
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
    if doc.get("teacher_forced"):
        paths.append(_token_kinds_plot(plt, doc["teacher_forced"], out_dir))
    return paths


def _token_kinds_plot(plt: Any, forced: dict[str, Any], out_dir: Path) -> str:
    """Per cell, the mean loss per solution token stacked by kind (share x mean), and the part
    no model can remove: the new letters' floor."""
    names = list(forced)
    kinds = list(next(iter(forced.values()))["kinds"])
    kinds.remove("symbol_new")
    kinds.insert(0, "symbol_new")  # at the bottom, so its floor marks a level inside its bar
    x = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(3.4 + 0.9 * len(names), 3.8), layout="constrained")
    bottom = np.zeros(len(names))
    for kind in kinds:
        part = np.array([(forced[c]["kinds"][kind]["share"] or 0.0) * forced[c]["nll"]
                         for c in names])
        ax.bar(x, part, 0.7, bottom=bottom, label=kind)
        bottom += part
    floor = [(forced[c]["symbol_new_floor"] or 0.0) * forced[c]["kinds"]["symbol_new"]["tokens"]
             / forced[c]["tokens"] for c in names]
    ax.scatter(x, floor, marker="_", s=400, color="black", zorder=3,
               label="floor (new letters)")
    ax.set_xticks(x, names, rotation=30, fontsize=8)
    ax.set_ylabel("teacher-forced loss per solution token (nats)")
    ax.set_title("teacher-forced loss by kind of token", fontsize=9)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    path = str(out_dir / "igsm_token_kinds.png")
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
