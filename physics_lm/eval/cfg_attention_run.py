"""`mode=attention` for CFG runs: boundary-to-boundary attention of a trained run and its init.

  python -m physics_lm.main --config=configs/cfg.py:... --config.mode=attention --workdir=RUN

Captures every layer's attention pattern (`blocks.{i}.attn.pattern`) on held-out rows of the
run's task (the eval key stream training never uses; corruption off, so the labels describe the
tokens), reduces them on device to the sums of `cfg_attention.batch_sums` and writes
`RUN/attention/cfg.json` plus `cfg_attention_heatmap.png` / `cfg_position_bias.png` (skipped
with a log line without matplotlib). The random-init control (the very init the run started
from) is measured on the same rows and always reported beside the trained model. What each
number means: `physics_lm/eval/cfg_attention.py`.

The `attention` config section (`AttentionSettings`; all optional, validated at config load):
  n_rows 64         held-out rows of task.seq_len tokens (packed like training)
  batch_size 8      rows per jitted forward (all layers' [B, H, T, T] patterns live at once)
  levels "all"      NT levels (1..D-1) used as query and key levels
  ranks 3           r = 0..ranks-1: the r-th most adjacent earlier NT end
  max_distance 64   position-bias curve reported for distances d < max_distance
  step -1           checkpoint step (-1 = latest)
  plots True
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from pathlib import Path
from typing import Any

import flax.linen as nn
import jax
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

from physics_lm.config import ConfigError
from physics_lm.eval import cfg_attention as ca
from physics_lm.eval.cfg_attention_plots import write_plots
from physics_lm.modes import Handler
from physics_lm.train import sharding
from physics_lm.train.steps import STREAM_EVAL_DATA, stream_key


@dataclasses.dataclass(frozen=True)
class AttentionSettings:
    """The `attention` section (module docstring)."""

    n_rows: int = 64
    batch_size: int = 8
    levels: str | tuple[int, ...] = "all"
    ranks: int = 3
    max_distance: int = 64
    step: int = -1
    plots: bool = True

    def __post_init__(self) -> None:
        for key in ("n_rows", "batch_size", "ranks", "max_distance"):
            if getattr(self, key) < 1:
                raise ConfigError(f"attention.{key}={getattr(self, key)!r}: must be >= 1")
        if isinstance(self.levels, str) and self.levels != "all":
            raise ConfigError(f"attention.levels={self.levels!r}: expected 'all' or a list")


def _resolve_levels(opt: Any, depth: int) -> tuple[int, ...]:
    levels = tuple(range(1, depth)) if opt == "all" else tuple(opt)
    if not levels or any(not 1 <= l < depth for l in levels) or len(set(levels)) != len(levels):
        raise ConfigError(f"attention.levels={list(levels)!r}: distinct levels in 1..{depth - 1}"
                          " for this grammar (level 0, the root, has no earlier end in its "
                          "string)")
    return levels


def _sums_fn(exp: Any, task: Any, s: AttentionSettings, levels: tuple[int, ...]):
    """Jitted `(params, i) -> sums` of held-out batch i (sampled on device)."""
    names = tuple(f"blocks.{i}.attn.pattern" for i in range(exp.model.cfg.num_layers))
    rules = sharding.activation_rules(exp.mesh)
    key = stream_key(exp.cfg.seed, STREAM_EVAL_DATA)

    def sums(params: Any, i: jax.Array) -> dict[str, jax.Array]:
        batch = exp.constrain_batch(task.sample(jax.random.fold_in(key, i), s.batch_size))
        with nn.logical_axis_rules(rules):
            _, acts = exp.model.apply({"params": params}, batch.tokens, capture=names,
                                      deterministic=True)
        return ca.batch_sums([acts[n] for n in names], batch.labels["nt_boundary"],
                             batch.labels["string_id"], levels, s.ranks)

    return jax.jit(sums, out_shardings=NamedSharding(exp.mesh, PartitionSpec()))


def measure(fn: Any, params: Any, n_batches: int) -> dict[str, np.ndarray]:
    """Sums over `n_batches` held-out batches, accumulated on the host in float64."""
    total: dict[str, np.ndarray] = {}
    for i in range(n_batches):
        for k, v in jax.device_get(fn(params, i)).items():
            total[k] = total.get(k, 0.0) + np.asarray(v, np.float64)
    return total


def _nan(reduce, x: np.ndarray, axis: Any = None) -> np.ndarray:
    """nanmean / nanmax that give NaN (null in the JSON) for an empty cell, silently."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return reduce(x, axis=axis)


def _heads(x: np.ndarray) -> dict[str, Any]:
    """{mean_heads, max_heads} over the last (head) axis."""
    return {"mean_heads": _nan(np.nanmean, x, -1).tolist(),
            "max_heads": _nan(np.nanmax, x, -1).tolist()}


def model_doc(f: dict[str, Any], levels: tuple[int, ...], depth: int, max_d: int
              ) -> dict[str, Any]:
    """One model's part of cfg.json from `cfg_attention.finalize` (layout: `_run`)."""
    K, t, o = len(levels), f["target"], f["other"]
    res = t["residual"][:, :K]  # [N, ℓ, ℓ', R, H]: the query sets "ends at ℓ"
    boundary = {"adjacent": {**_heads(res[:, :, :, 0]),
                             "attn_mean_heads": np.mean(t["attn"][:, :K, :, 0], -1).tolist(),
                             "bias_mean_heads": np.mean(t["bias"][:, :K, :, 0], -1).tolist(),
                             "per_head": np.moveaxis(res[:, :, :, 0], -1, 1).tolist()},
                **{f"rank{r}": _heads(res[:, :, :, r]) for r in range(1, res.shape[3])},
                "other": _heads(o["residual"][:, :K])}
    summary = {"boundary_adjacent": float(_nan(np.nanmean, _nan(np.nanmax, res[..., 0, :], -1))),
               "boundary_other": float(_nan(np.nanmean, _nan(np.nanmax, o["residual"][:, :K],
                                                             -1)))}
    dp = {}
    for name, level in (("parent", depth - 1), ("grandparent", depth - 2)):
        if level in levels:  # query set K = every token
            k = levels.index(level)
            dp[name] = {"level": level, "residual": _heads(t["residual"][:, K, k, 0]),
                        "attn_mean_heads": np.mean(t["attn"][:, K, k, 0], -1).tolist(),
                        "bias_mean_heads": np.mean(t["bias"][:, K, k, 0], -1).tolist(),
                        "other_residual": _heads(o["residual"][:, K, k])}
            summary[f"dp_{name}"] = float(_nan(np.nanmax, t["residual"][:, K, k, 0]))
    return {"position_bias": f["position_bias"][:, :, :max_d].tolist(), "boundary": boundary,
            "any_to_end": _heads(t["residual"][:, K, :, 0]), "dp_update": dp, "summary": summary}


def table(docs: dict[str, dict], counts: np.ndarray, levels: tuple[int, ...]) -> list[dict]:
    """One row per (layer, ℓ, ℓ'): the adjacent and other residuals of every model."""
    rows = []
    n_layers = len(docs["trained"]["boundary"]["adjacent"]["mean_heads"])
    for layer in range(n_layers):
        for a, la in enumerate(levels):
            for b, lb in enumerate(levels):
                row = {"layer": layer, "query_level": la, "key_level": lb,
                       "n_queries": int(counts[a, b, 0])}
                for m, d in docs.items():
                    for kind in ("adjacent", "other"):
                        for agg in ("mean_heads", "max_heads"):
                            row[f"{m}_{kind}_{agg}"] = d["boundary"][kind][agg][layer][a][b]
                rows.append(row)
    return rows


def _run(loaded: Any, s: AttentionSettings) -> dict[str, Any]:
    """Measures the run and its control; cfg.json holds {"grammar", "task", "checkpoint_step",
    "levels", "num_layers", "num_heads", "n_rows", "n_tokens", "settings", "counts": {
    "boundary_queries" [ℓ][ℓ'], "any_queries" [ℓ'], "other_pairs" [ℓ][ℓ']}, "trained" /
    "control": {"position_bias" [layer][head][d], "boundary": {"adjacent" | "rank<r>" |
    "other": {"mean_heads" | "max_heads": [layer][ℓ][ℓ']}}, "any_to_end", "dp_update":
    {"parent" | "grandparent": {"level", "residual": {..: [layer]}, ...}}, "summary"},
    "table": [rows], "heatmap": {model: [layer][ℓ][ℓ'] max-over-heads adjacent residual}}.
    summary: boundary_adjacent / boundary_other = mean over (layer, ℓ, ℓ') of the strongest
    head's residual; dp_parent / dp_grandparent = the strongest head's over the layers."""
    exp = loaded.exp
    task = dataclasses.replace(exp.task, corrupt_frac=0.0)
    depth = task.spec.depth
    levels = _resolve_levels(s.levels, depth)
    dp = sharding.data_parallel_size(exp.mesh)
    if s.batch_size % dp:
        raise ConfigError(f"attention.batch_size={s.batch_size}: must divide by the "
                          f"data-parallel size {dp}")
    n_batches = math.ceil(s.n_rows / s.batch_size)
    with jax.set_mesh(exp.mesh):
        fn = _sums_fn(exp, task, s, levels)
        sums = {m: measure(fn, params, n_batches)
                for m, params in (("trained", loaded.params), ("control", loaded.control_params()))}
    finals = {m: ca.finalize(x) for m, x in sums.items()}
    max_d = min(s.max_distance, task.seq_len)
    docs = {m: model_doc(f, levels, depth, max_d) for m, f in finals.items()}
    f, K = finals["trained"], len(levels)
    return {"grammar": task.grammar, "task": task.describe(), "checkpoint_step": loaded.step,
           "levels": list(levels), "num_layers": exp.model.cfg.num_layers,
           "num_heads": exp.model.cfg.num_heads, "n_rows": n_batches * s.batch_size,
           "n_tokens": int(sums["trained"]["bias_n"][0]), "settings": dataclasses.asdict(s),
           "counts": {"boundary_queries": f["target"]["n"][:K, :, 0].astype(int).tolist(),
                      "any_queries": f["target"]["n"][K, :, 0].astype(int).tolist(),
                      "other_pairs": f["other"]["n"][:K].astype(int).tolist()},
           **docs, "table": table(docs, f["target"]["n"], levels),
           "heatmap": {m: d["boundary"]["adjacent"]["max_heads"] for m, d in docs.items()}}


def _plots(doc: dict[str, Any], out_dir: Path) -> None:
    if doc["settings"]["plots"]:
        write_plots(doc, Path(out_dir))


ATTENTION = Handler(settings=AttentionSettings, run=_run, plots=_plots)
