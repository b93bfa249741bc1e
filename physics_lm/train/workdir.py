"""The workdir contract: which config it holds, and whether its run has finished.

`config.json` is written once (by process 0, atomically: other processes of a multi-host run may
read it at the same moment); a relaunch whose config changes the run's math is refused.
`finished.json` is written by process 0 after the final checkpoint is committed: it is how a
babysitter (launch/babysit.py) knows to stop relaunching.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import jax

from physics_lm import modes
from physics_lm.config import ConfigError, ExperimentConfig

# Keys that may change between launches of the same run (they do not change the math; "tag" only
# names an analysis output folder). "extra"
# held the analysis sections in config.json files written before they were typed.
RESUMABLE_KEYS = ("train.log_every", "train.eval_every", "train.eval_batches",
                  "train.checkpoint_every", "train.keep_checkpoints",
                  "train.peak_flops_per_device", "train.device_memory_bytes",
                  "train.analysis_every", "mesh", "tag", *modes.ANALYSIS_MODES, "extra")
FINISHED = "finished.json"


def _flatten(d: dict, prefix: str = "") -> dict[str, Any]:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v and key not in RESUMABLE_KEYS:
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    tmp.replace(path)


def check_workdir_config(cfg: ExperimentConfig, workdir: Path, *, write: bool = True,
                         ignore: tuple[str, ...] = ()) -> None:
    """Writes config.json, or refuses a relaunch whose config changes the run's math.

    eval/probe modes call it with write=False and ignore=("mode",) to check that the config
    they were given describes the run in `workdir`.
    """
    path = workdir / "config.json"
    new = _flatten(json.loads(cfg.to_json()))
    skip = (*RESUMABLE_KEYS, *ignore)
    if path.exists():
        old = _flatten(json.loads(path.read_text()))
        # A key added to the config after the run was written counts as its default value.
        default = _flatten(json.loads(ExperimentConfig().to_json()))
        old = {**{k: v for k, v in default.items() if k in new}, **old}
        diff = {k: (old.get(k), v) for k, v in new.items() if k not in skip and old.get(k) != v}
        diff.update({k: (v, None) for k, v in old.items() if k not in new and k not in skip})
        if diff:
            hint = (f"to extend or fork it, train in a new --workdir with "
                    f"--config.train.init_from={workdir} (README: Scaling up, extending a run)"
                    if write else
                    f"an analysis mode needs the config the run was trained with: pass the "
                    f"training flags again (the old values; the run's config is {path})")
            raise ConfigError(f"workdir {workdir} holds a run with a different config "
                              f"(key: old -> new): {diff}; {hint}")
    elif not write:
        raise ConfigError(f"workdir {workdir} has no config.json: nothing was trained there "
                          "(run mode=train first)")
    if write and jax.process_index() == 0:
        _write_atomic(path, cfg.to_json())


def mark_finished(workdir: Path, step: int) -> None:
    """Records that the run reached its last step (process 0; the checkpoint is committed)."""
    if jax.process_index() == 0:
        _write_atomic(workdir / FINISHED, json.dumps({"step": step}) + "\n")


def finished_step(workdir: str | Path) -> int | None:
    """The step `finished.json` records, or None while the run has not finished."""
    path = Path(workdir) / FINISHED
    try:
        return int(json.loads(path.read_text())["step"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
