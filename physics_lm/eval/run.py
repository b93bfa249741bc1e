"""The `eval` and `sample` modes: `evaluate_checkpoint(cfg, workdir)`, `sample_checkpoint(...)`.

Both restore the run in `workdir` (`load_trained` checks that the config describes it) and pull
the params to the host, so sampling runs on one device: the Part 1 models are small and the
decode batch, not the model, is what is large.

workdir/eval/cfg.json holds `evaluate_cfg`'s dict (keys documented in cfg_eval.py) plus step (the
checkpoint), eval_config (the resolved eval section), seconds, and control (the same metrics for
the random-init params of the run) when eval.control is set.

`cfg.extra["sample"]` keys (all optional; unknown keys are a ConfigError): n=64, temperature=1.0,
top_k=0, prefix_len=0 (tokens of a fresh true string given after BOS), decode_batch=128,
max_total_len=0 (0 = model.max_len), seed=0, step=-1 (latest).
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any

import jax
import numpy as np
from absl import logging

from physics_lm.config import ConfigError, ExperimentConfig
from physics_lm.data.cfg import membership
from physics_lm.data.cfg.task import CFGTask
from physics_lm.eval.cfg_eval import (
    EvalConfig,
    evaluate_cfg,
    parse_section,
    sample_from_prefixes,
    tkey,
    true_strings,
)
from physics_lm.eval.plots import write_plots
from physics_lm.train.setup import fresh_state
from physics_lm.train.trainer import load_trained


@dataclasses.dataclass(frozen=True)
class SampleConfig:
    """The `sample` section (module docstring)."""

    n: int = 64
    temperature: float = 1.0
    top_k: int = 0
    prefix_len: int = 0
    decode_batch: int = 128
    max_total_len: int = 0
    seed: int = 0
    step: int = -1


def _load_cfg_run(cfg: ExperimentConfig, workdir: Path, step: int):
    exp, params, step = load_trained(cfg, workdir, None if step < 0 else step)
    if not isinstance(exp.task, CFGTask):
        raise ConfigError(f"task {exp.task.name!r}: eval/sample modes support cfg tasks only")
    return exp, jax.device_get(params), step


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, float]:
    """Scalar leaves of a nested result as {"a/b/c": value} (lists are left out)."""
    out: dict[str, float] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(flatten(v, f"{prefix}{k}/"))
        elif isinstance(v, int | float) and not isinstance(v, bool):
            out[f"{prefix}{k}"] = float(v)
    return out


def json_safe(x: Any) -> Any:
    """NaN/inf (e.g. an entropy over zero valid generations) -> null: strict JSON readers."""
    if isinstance(x, dict):
        return {k: json_safe(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [json_safe(v) for v in x]
    if isinstance(x, float) and not np.isfinite(x):
        return None
    return x


def evaluate_checkpoint(cfg: ExperimentConfig, workdir: str | Path) -> dict[str, float]:
    """Writes workdir/eval/cfg.json (+ plots) for a trained CFG run; returns the flat scalars."""
    workdir = Path(workdir)
    ec = EvalConfig.from_dict(cfg.extra.get("eval"))
    exp, params, step = _load_cfg_run(cfg, workdir, ec.step)
    t0 = time.perf_counter()
    result: dict[str, Any] = {"step": step, "eval_config": dataclasses.asdict(ec),
                              **evaluate_cfg(exp.model.cfg, params, exp.task, ec)}
    if ec.control:  # the same metrics for the random-init model of the same run
        control = jax.device_get(fresh_state(exp).params)
        result["control"] = evaluate_cfg(exp.model.cfg, control, exp.task, ec)
    result["seconds"] = time.perf_counter() - t0
    if jax.process_index() == 0:
        out_dir = workdir / "eval"
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "cfg.json").write_text(json.dumps(json_safe(result), indent=1, allow_nan=False))
        if ec.plots:
            write_plots(result, out_dir)
        logging.info("wrote %s", out_dir / "cfg.json")
    return flatten({k: v for k, v in result.items() if k != "eval_config"})


def sample_checkpoint(cfg: ExperimentConfig, workdir: str | Path) -> dict[str, Any]:
    """Writes generations to workdir/samples/step{S}_cut{K}_T{t}.jsonl, one JSON object a line:
    tokens (prefix + completion, no BOS/EOS), prefix_len, eos, valid (membership; the CYK),
    logprob_model (sum of log q of the sampled tokens)."""
    workdir = Path(workdir)
    sc: SampleConfig = parse_section(SampleConfig, cfg.extra.get("sample"), "sample")
    exp, params, step = _load_cfg_run(cfg, workdir, sc.step)
    g = exp.task.spec
    key = jax.random.key(sc.seed)
    prefixes = [s[: sc.prefix_len] for s in true_strings(g, jax.random.fold_in(key, 0), sc.n)]
    ec = EvalConfig(top_k=sc.top_k, decode_batch=sc.decode_batch)
    strings, eos, logp = sample_from_prefixes(
        exp.model.cfg, params, g, prefixes, jax.random.fold_in(key, 1), sc.temperature, ec,
        sc.max_total_len or exp.model.cfg.max_len)
    valid = membership.check_strings(g, strings) & eos
    path = workdir / "samples" / f"step{step}_cut{sc.prefix_len}_{tkey(sc.temperature)}.jsonl"
    if jax.process_index() == 0:
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w") as f:
            for s, p, e, v, lp in zip(strings, prefixes, eos, valid, logp, strict=True):
                f.write(json.dumps({"tokens": s, "prefix_len": len(p), "eos": bool(e),
                                    "valid": bool(v), "logprob_model": float(lp)}) + "\n")
    return {"path": str(path), "n": len(strings), "accuracy": float(np.mean(valid)),
            "step": step}
