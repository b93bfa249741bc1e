"""What each `cfg.mode` runs, and which task family answers each analysis mode.

`train` is the same for every task. The analysis modes (`eval`, `sample`, `probe`, `attention`)
ask a question whose answer depends on the data family (a CFG string is judged by membership, an
iGSM solution by the judge), so each family registers a `Handler` per mode here (big_vision's
`evaluators/` idea): the mode loads the trained run, finds `HANDLERS[mode][family]`, calls it
and writes `workdir/<mode>/<family>.json`. Adding a family means adding rows, never editing
another family's code. The handler's `settings` dataclass is the mode's config section;
`config.from_config_dict` validates it at load time whatever the mode, so a typo in `eval` fails
before a long training run.

This module imports no JAX: the config boundary uses it.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable
from typing import Any

from physics_lm.config import ConfigError

# mode -> "module:function(cfg, workdir)"; imported lazily so one mode never pays for another.
MODES = {
    "train": "physics_lm.train.trainer:train_and_evaluate",
    "eval": "physics_lm.analysis:run_analysis",
    "sample": "physics_lm.analysis:run_analysis",
    "probe": "physics_lm.analysis:run_analysis",
    "attention": "physics_lm.analysis:run_analysis",
    "regret": "physics_lm.analysis:run_analysis",
}
ANALYSIS_MODES = ("eval", "sample", "probe", "attention", "regret")

# mode -> task family -> "module:ATTRIBUTE" of a `Handler`.
HANDLERS: dict[str, dict[str, str]] = {
    "eval": {"cfg": "physics_lm.eval.cfg_eval:EVALUATOR",
             "igsm": "physics_lm.eval.igsm_eval:EVALUATOR"},
    "sample": {"cfg": "physics_lm.eval.cfg_sample:SAMPLER"},
    "probe": {"cfg": "physics_lm.probing.cfg_run:PROBE",
              "igsm": "physics_lm.probing.igsm_run:PROBE"},
    "attention": {"cfg": "physics_lm.eval.cfg_attention_run:ATTENTION"},
    "regret": {"igsm": "physics_lm.eval.regret_run:REGRET"},
}


@dataclasses.dataclass(frozen=True)
class Handler:
    """One family's answer to one analysis mode.

    Attributes:
      settings: frozen dataclass of the mode's config section (defaults = the section's
        defaults); its `__post_init__` may raise ConfigError for cross-field checks.
      run: `run(loaded, settings) -> doc`, `loaded` a `physics_lm.analysis.LoadedRun`; the doc
        is written as JSON by the mode (a `"records"` list, if present, goes to a JSONL file).
      step_field: the settings field that picks the checkpoint (-1 = latest).
      plots: optional `plots(doc, out_dir)` run after the JSON is written.
    """

    settings: type
    run: Callable[[Any, Any], dict[str, Any]]
    step_field: str = "step"
    plots: Callable[[dict[str, Any], Any], Any] | None = None


def _import(target: str) -> Any:
    module, attr = target.split(":")
    return getattr(importlib.import_module(module), attr)


def mode_function(mode: str) -> Callable[..., Any]:
    """The `(cfg, workdir)` function of `mode` (train, or an analysis mode)."""
    if mode not in MODES:
        raise ConfigError(f"mode={mode!r}: must be one of {tuple(MODES)}")
    return _import(MODES[mode])


def family_handler(mode: str, family: str) -> Handler | None:
    """The family's handler for an analysis mode, or None if the family has none."""
    target = HANDLERS.get(mode, {}).get(family)
    return None if target is None else _import(target)


def require_handler(mode: str, family: str) -> Handler:
    handler = family_handler(mode, family)
    if handler is None:
        known = ", ".join(HANDLERS.get(mode, {})) or "none"
        raise ConfigError(f"mode={mode!r} is not available for task.name={family!r}; "
                          f"families with {mode}: {known}")
    return handler
