"""The analysis modes (`eval`, `sample`, `probe`, `attention`) for any task family.

  python -m physics_lm.main --config=CONFIG --config.mode=eval --workdir=RUN

Each mode restores the run in `workdir` (`load_trained` checks that the config describes it),
finds the task family's handler (`physics_lm/modes.py`), runs it and writes what it returned:
`workdir/<mode>/<family>.json` (NaN/inf as null: strict JSON), one
`workdir/<mode>/<family>_<name>.jsonl` per entry of the doc's `"records"` (kept out of the JSON),
and the handler's plots. The doc also gets `step` (the checkpoint) and `seconds`. With
`--config.tag=T` the folder is `workdir/<mode>-T/`: a greedy and a sampled eval of one run sit
side by side.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import time
from pathlib import Path
from typing import Any

import jax
from absl import logging

from physics_lm import modes
from physics_lm.config import ExperimentConfig
from physics_lm.train.metrics import json_safe
from physics_lm.train.setup import Experiment, fresh_params
from physics_lm.train.trainer import load_trained


@dataclasses.dataclass(frozen=True)
class LoadedRun:
    """A trained run restored for analysis: what every handler receives."""

    cfg: ExperimentConfig
    workdir: Path
    exp: Experiment
    params: Any  # restored with the run's shardings (on the current mesh)
    step: int

    @functools.cached_property
    def host_params(self) -> Any:
        """The params as numpy arrays (decoders that run on one device)."""
        return jax.device_get(self.params)

    def control_params(self) -> Any:
        """The random-init control: the very init the trained run started from, same shardings."""
        return fresh_params(self.exp)


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, float]:
    """Scalar leaves of a nested result as {"a/b/c": value} (lists are left out)."""
    out: dict[str, float] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(flatten(v, f"{prefix}{k}/"))
        elif isinstance(v, int | float) and not isinstance(v, bool):
            out[f"{prefix}{k}"] = float(v)
    return out


def output_dir(workdir: Path, cfg: ExperimentConfig) -> Path:
    """Where an analysis mode writes: workdir/<mode>, or workdir/<mode>-<tag> when tagged."""
    return Path(workdir) / (f"{cfg.mode}-{cfg.tag}" if cfg.tag else cfg.mode)


def write_outputs(doc: dict[str, Any], out_dir: Path, family: str) -> dict[str, str]:
    """Writes `<family>.json` and one JSONL per records entry; returns {name: path}."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, rows in doc.get("records", {}).items():
        path = out_dir / f"{family}_{name}.jsonl"
        with path.open("w") as f:
            for row in rows:
                f.write(json.dumps(json_safe(row), allow_nan=False) + "\n")
        paths[name] = str(path)
    path = out_dir / f"{family}.json"
    body = {k: v for k, v in doc.items() if k != "records"}
    path.write_text(json.dumps(json_safe(body), indent=1, allow_nan=False))
    paths["json"] = str(path)
    return paths


def run_analysis(cfg: ExperimentConfig, workdir: str | Path) -> dict[str, Any]:
    """Runs the analysis `cfg.mode` on the run in `workdir`; see the module docstring.

    Returns the doc's scalars flattened ("a/b/c": value) plus the written paths ("path/<name>").
    """
    workdir = Path(workdir)
    handler = modes.require_handler(cfg.mode, cfg.task.name)
    settings = getattr(cfg, cfg.mode)
    want = getattr(settings, handler.step_field)
    exp, params, step = load_trained(cfg, workdir, None if want < 0 else want)
    t0 = time.perf_counter()
    doc = {"step": step, **handler.run(LoadedRun(cfg, workdir, exp, params, step), settings)}
    doc["seconds"] = time.perf_counter() - t0
    out = {"step": float(step)}
    if jax.process_index() == 0:
        out_dir = output_dir(workdir, cfg)
        paths = write_outputs(doc, out_dir, cfg.task.name)
        if handler.plots is not None:
            handler.plots(doc, out_dir)
        logging.info("%s: wrote %s", cfg.mode, ", ".join(paths.values()))
        out.update({f"path/{k}": v for k, v in paths.items()})
    summary = {k: v for k, v in doc.items() if k not in ("records", "settings", "eval_config")}
    return {**flatten(summary), **out}
