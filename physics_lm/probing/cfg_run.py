"""`mode=probe` for CFG runs: NT-ancestor / NT-boundary probes of a trained run and its init.

  python -m physics_lm.main --config=configs/cfg.py:... --config.mode=probe --workdir=RUN

Writes `RUN/probe/cfg.json` (layout in `_run`) and `RUN/probe/heatmap.png` (level × layer;
skipped with a log line when matplotlib is not installed). The control is the same architecture
at its initial parameters (the very init the trained run started from), probed with the same
steps and the same data, and always reported beside the trained model.

The `probe` config section (`ProbeSettings`; all optional, validated at config load):
  steps 2000          probe updates (every probe of every layer, level and kind at once)
  batch_size 32       rows per update (divisible by the mesh's data-parallel size)
  lr 1e-3             Adam peak learning rate (warmup, then cosine to lr/10)
  warmup_steps 100
  eval_batches 8      held-out batches of `batch_size` rows for the accuracies
  kinds ["linear", "multi"]  "multi" = the paper's multi-head linear probe
  schedule "cosine"   or "linear" (lr to 0, no warmup); weight_decay 0.0 (AdamW when > 0)
  num_heads 16, rank 32      multi-linear heads and rank per head
  max_offset 128      multi-linear relative offsets are clipped here
  remat True          recompute multi-linear pooling in the backward pass (memory)
  layers "all"        or a list of names from `capture.residual_layer_names`
  levels "all"        or a list of NT levels in 1..D-1
  checkpoint_step -1  which checkpoint (-1 = latest)
  log_every 200
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

import jax
import numpy as np
from absl import logging
from jax.sharding import NamedSharding, PartitionSpec

from physics_lm.config import ConfigError
from physics_lm.data.cfg.task import CFGTask
from physics_lm.modes import Handler
from physics_lm.probing import cfg_probe, heads
from physics_lm.probing import train_probe as tp
from physics_lm.probing.capture import residual_layer_names
from physics_lm.train import sharding

_FIT_KEYS = tuple(f.name for f in dataclasses.fields(tp.FitSettings) if f.name != "seed")


@dataclasses.dataclass(frozen=True)
class ProbeSettings:
    """The `probe` section (module docstring); fit sizes default to `tp.FitSettings`'s."""

    steps: int = tp.FitSettings.steps
    batch_size: int = tp.FitSettings.batch_size
    lr: float = tp.FitSettings.lr
    warmup_steps: int = tp.FitSettings.warmup_steps
    eval_batches: int = tp.FitSettings.eval_batches
    kinds: tuple[str, ...] = heads.KINDS
    schedule: str = tp.FitSettings.schedule
    weight_decay: float = tp.FitSettings.weight_decay
    num_heads: int = tp.FitSettings.num_heads
    rank: int = tp.FitSettings.rank
    max_offset: int = tp.FitSettings.max_offset
    remat: bool = tp.FitSettings.remat
    log_every: int = tp.FitSettings.log_every
    layers: str | tuple[str, ...] = "all"
    levels: str | tuple[int, ...] = "all"
    checkpoint_step: int = -1

    def __post_init__(self) -> None:
        for key in ("steps", "batch_size", "eval_batches", "num_heads", "rank", "max_offset",
                    "log_every"):
            if getattr(self, key) < 1:
                raise ConfigError(f"probe.{key}={getattr(self, key)!r}: must be >= 1")
        if not self.lr > 0 or self.warmup_steps < 0:
            raise ConfigError(f"probe.lr/warmup_steps={(self.lr, self.warmup_steps)!r}: need "
                              "lr > 0 and warmup_steps >= 0")
        if self.schedule not in tp.SCHEDULES or self.weight_decay < 0:
            raise ConfigError(f"probe.schedule/weight_decay={(self.schedule, self.weight_decay)!r}"
                              f": schedule one of {tp.SCHEDULES}, weight_decay >= 0")
        kinds = self.kinds
        if not kinds or any(k not in heads.KINDS for k in kinds) or len(set(kinds)) != len(kinds):
            raise ConfigError(f"probe.kinds={list(kinds)!r}: a non-empty subset of {heads.KINDS}")
        for key in ("layers", "levels"):
            if isinstance(getattr(self, key), str) and getattr(self, key) != "all":
                raise ConfigError(f"probe.{key}={getattr(self, key)!r}: expected 'all' or a list")

    def fit(self, seed: int) -> tp.FitSettings:
        return tp.FitSettings(**{k: getattr(self, k) for k in _FIT_KEYS}, seed=seed)


def _resolve_layers(opt: Any, num_layers: int) -> tuple[str, ...]:
    known = residual_layer_names(num_layers)
    names = known if opt == "all" else tuple(opt)
    bad = [n for n in names if n not in known]
    if bad or not names:
        raise ConfigError(f"probe.layers={list(names)!r}: names must be among {list(known)}")
    return names


def probe_model(problem: tp.ProbeProblem, steps: tuple, frozen: Any, fit: tp.FitSettings,
                N: int, D: int, replicated: Any, name: str) -> dict[str, Any]:
    """Fits every probe on one frozen model and evaluates it on held-out batches."""
    tx, jit_train, jit_eval = steps
    state = jax.device_put(tp.init_probe_state(problem, tx, fit, N, D), replicated)
    state, last = tp.fit(jit_train, state, frozen, fit, name=f"probe[{name}]")
    return {"metrics": tp.evaluate(jit_eval, state, frozen, fit.eval_batches),
            "final_loss": last}


def _num(x: Any) -> float | None:
    """A JSON-able float; NaN (an empty subset) becomes null."""
    x = float(x)
    return None if math.isnan(x) else x


def report(task: CFGTask, layers: tuple[str, ...], levels: tuple[int, ...],
           by_model: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """results[kind][layer][f"level{l}"][target] = {trained, control, baselines}; see module."""
    grp = cfg_probe.groups(task, levels)
    base = next(iter(by_model.values()))["metrics"]["baseline"]
    kinds = [k for k in by_model["trained"]["metrics"] if k != "baseline"]
    results: dict[str, Any] = {}
    heat: dict[str, Any] = {}
    for kind in kinds:
        results[kind] = {layer: {f"level{l}": {} for l in levels} for layer in layers}
        heat[kind] = {"ancestor_acc_boundary": {}, "boundary_acc": {}}
        for g, (target, l, n_cls) in enumerate(grp):
            for li, layer in enumerate(layers):
                entry = {model: {"acc": _num(m["metrics"][kind]["acc"][li, g]),
                                 "acc_boundary": _num(m["metrics"][kind]["acc_focus"][li, g])}
                         for model, m in by_model.items()}
                entry.update(majority=_num(base["majority"][g]),
                             majority_boundary=_num(base["majority_focus"][g]),
                             chance=1.0 / n_cls, num_classes=n_cls, n=int(base["n"][g]),
                             n_boundary=int(base["n_focus"][g]))
                results[kind][layer][f"level{l}"][target] = entry
        for model, m in by_model.items():
            acc = m["metrics"][kind]
            L = len(levels)
            heat[kind]["ancestor_acc_boundary"][model] = [
                [_num(acc["acc_focus"][li, i]) for li in range(len(layers))] for i in range(L)]
            heat[kind]["boundary_acc"][model] = [
                [_num(acc["acc"][li, L + i]) for li in range(len(layers))] for i in range(L)]
    return {"results": results, "heatmap": heat}


def write_heatmap(path: Path, doc: dict[str, Any]) -> bool:
    """level × layer panels (rows: kind × target; columns: trained, control); False if no mpl."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        logging.warning("matplotlib is not installed: skipping %s (the numbers are in cfg.json "
                        "under 'heatmap')", path)
        return False
    heat, layers, levels = doc["heatmap"], doc["layers"], doc["levels"]
    rows = [(k, t) for k in heat for t in heat[k]]
    models = list(next(iter(heat.values()))["boundary_acc"])
    fig, axes = plt.subplots(len(rows), len(models), squeeze=False, layout="constrained",
                             figsize=(1.5 + max(2.8, 0.7 * len(layers)) * len(models),
                                      0.8 + 2.0 * len(rows)))
    for r, (kind, target) in enumerate(rows):
        for c, model in enumerate(models):
            ax = axes[r][c]
            grid = np.array(heat[kind][target][model], dtype=float)
            im = ax.imshow(grid, vmin=0.0, vmax=1.0, cmap="viridis", aspect="auto")
            for (i, j), v in np.ndenumerate(grid):
                ax.text(j, i, "" if np.isnan(v) else f"{v:.2f}", ha="center", va="center",
                        fontsize=6, color="w" if v < 0.6 else "k")
            ax.set_title(f"{model}\n{kind} · {target}", fontsize=8)
            ax.set_xticks(range(len(layers)), [n.replace("blocks.", "").replace(".resid_post", "")
                                               for n in layers], fontsize=6)
            ax.set_yticks(range(len(levels)), [f"L{l}" for l in levels], fontsize=6)
    fig.colorbar(im, ax=axes, shrink=0.6)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def _run(loaded: Any, settings: ProbeSettings) -> dict[str, Any]:
    """Probes the run and its random-init control; the doc written to probe/cfg.json.

    cfg.json: {"grammar", "task", "checkpoint_step", "layers", "levels", "settings", "note",
    "final_loss": {model: {...}}, "results": {kind: {layer: {"level<l>": {target: {
    "trained": {"acc", "acc_boundary"}, "control": {...}, "majority", "majority_boundary",
    "chance", "num_classes", "n", "n_boundary"}}}}}, "heatmap": {kind: {"ancestor_acc_boundary"
    | "boundary_acc": {model: [levels][layers]}}}}. "acc" is over every labelled token (BOS, EOS
    and pad are never scored); "acc_boundary" only over the level's NT ends (nt_boundary[l] = 1),
    where it is the paper's headline ancestor accuracy and, for the boundary bit, its recall.
    Baselines (majority = best constant guess on the same positions) come from the same
    held-out batches both models are scored on; a subset with no positions gives null.
    """
    exp, fit = loaded.exp, settings.fit(loaded.cfg.seed)
    task = exp.task
    dp = sharding.data_parallel_size(exp.mesh)
    if fit.batch_size % dp:
        raise ConfigError(f"probe.batch_size={fit.batch_size}: must divide by the data-parallel "
                          f"size {dp}")
    layers = _resolve_layers(settings.layers, exp.model.cfg.num_layers)
    levels = (cfg_probe.probe_levels(task) if settings.levels == "all"
              else tuple(settings.levels))
    try:
        cfg_probe.check_levels(task, levels)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    problem = cfg_probe.make_problem(task, exp.model, layers, levels,
                                     sharding.activation_rules(exp.mesh))
    replicated = NamedSharding(exp.mesh, PartitionSpec())
    N, D = len(layers), exp.model.cfg.d_model
    by_model: dict[str, dict[str, Any]] = {}
    with jax.set_mesh(exp.mesh):
        steps = tp.jit_steps(problem, fit, batch_constraint=exp.constrain_batch,
                             replicated=replicated)
        by_model["trained"] = probe_model(problem, steps, loaded.params, fit, N, D, replicated,
                                          "trained")
        by_model["control"] = probe_model(problem, steps, loaded.control_params(), fit, N, D,
                                          replicated, "control")
    return {"grammar": task.grammar, "task": task.describe(), "checkpoint_step": loaded.step,
            "layers": list(layers), "levels": list(levels),
            "settings": {**dataclasses.asdict(fit), **dataclasses.asdict(settings)},
            "note": cfg_probe.ambiguity_note(task),
            "final_loss": {m: v["final_loss"] for m, v in by_model.items()},
            **report(task, layers, levels, by_model)}


def _heatmap(doc: dict[str, Any], out_dir: Path) -> None:
    write_heatmap(Path(out_dir) / "heatmap.png", doc)


PROBE = Handler(settings=ProbeSettings, run=_run, step_field="checkpoint_step", plots=_heatmap)
