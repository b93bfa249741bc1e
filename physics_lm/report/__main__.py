"""`python -m physics_lm.report --root runs/<sweep> [--out report.md]` (see __init__.py)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from physics_lm.report import figures, tables
from physics_lm.report.runs import find_runs


def write_report(root: Path, out: Path | None = None) -> Path:
    """Writes the Markdown report (and its figures beside it); returns its path."""
    root = Path(root)
    out = Path(out) if out else root / "report.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    runs = find_runs(root)
    figs = {name: fn(runs, out.parent / f"{out.stem}_{name}.png")
            for name, fn in (("igsm_cells", figures.igsm_cells),
                             ("retry_rate", figures.retry_rate),
                             ("learning_curve", figures.learning_curve),
                             ("igsm_learning_curve", figures.igsm_learning_curve))}
    img = lambda name: f"\n![{name}]({out.stem}_{name}.png)\n" if figs[name] else ""
    sections = [
        f"# Report: {root}\n\n{len(runs)} runs. Gaps (—) are results not (yet) written.\n",
        "## Part 1: generation accuracy (cut0, T=1) / KL per grammar x position scheme\n",
        tables.part1_generation(runs),
        "## Part 1: NT-ancestor probe accuracy at NT ends per level (ctl = random init)\n",
        tables.part1_probe(runs),
        "## Part 1: learning curves (periodic evals, `train.analysis_every`)\n",
        tables.part1_learning_curve(runs), img("learning_curve"),
        "## Part 2.1: accuracy per cell per model\n", tables.part21_cells(runs),
        img("igsm_cells"),
        "## Part 2.1: learning curves (periodic evals, `train.analysis_every`)\n",
        tables.part21_learning_curve(runs), img("igsm_learning_curve"),
        "## Part 2.1: depth vs width (accuracy)\n", tables.part21_depth_width(runs),
        "## Part 2.1: V-probe accuracy per task (id split; ctl = random init)\n",
        tables.part21_probe(runs),
        "## Part 2.2: accuracy vs retry rate and mask\n", tables.part22_retry(runs),
        img("retry_rate"),
        "## Part 2.2: BACK sentences per generation\n",
        tables.part22_retry(runs, key="back_mean", digits=2),
        "## Part 2.2: retry upon regret vs beam search (mode=regret)\n",
        tables.part22_regret(runs),
        "## Part 2.2: LoRA ranks vs full fine-tuning\n", tables.part22_lora(runs),
    ]
    out.write_text("\n".join(sections))
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m physics_lm.report",
                                     description="The papers' tables from a sweep's workdirs.")
    parser.add_argument("--root", required=True, help="sweep folder (searched recursively)")
    parser.add_argument("--out", default=None, help="Markdown file (default ROOT/report.md)")
    ns = parser.parse_args(argv)
    if not Path(ns.root).is_dir():
        print(f"error: --root={ns.root}: no such folder", file=sys.stderr)
        return 2
    print(write_report(Path(ns.root), Path(ns.out) if ns.out else None))
    return 0


if __name__ == "__main__":
    sys.exit(main())
