"""`mode=probe` for iGSM runs: V-probing of the frozen model (Part 2.1 §4, Fig. 8-10).

  python -m physics_lm.main --config=configs/igsm.py:... --config.mode=probe --workdir=RUN

Writes `RUN/probe/igsm.json`, `RUN/probe/igsm_mistakes.jsonl` (with `mistakes > 0`) and heatmaps.
Per model (the trained run, and its random-init control: the same architecture at the init the
run started from, probed with the same steps and data) one V-probe per task is fitted on problems
of the training distribution (the run's template bins and op law), then scored on fresh problems
of the *test* bins: in distribution (the training op law) and out of distribution (each OOD op of
the task, `IGSMTask.ood_ops`). Queries, positions and labels: `igsm_queries.py`; the probe:
`igsm_probe.py`.

igsm.json: {"checkpoint_step", "task", "settings", "tasks", "splits", "final_loss",
"results": {task: {split: {model: {"acc", "n", "acc_pos", "n_pos", "acc_neg", "acc_known",
...}, "majority"}}}, "depth": {"layers", "distances", model: [[acc by distance] per layer],
"n": [...]}, "mistakes": {...}}. "acc_pos"/"acc_neg" are the accuracies on the positive and
negative queries of binary tasks (the imbalanced `dep` and `nece_next` need them), "acc_known"
the `value` accuracy on known parameters, "majority" the best constant guess on the same
queries. "depth" is Fig. 10: `nece` probed from every layer's hidden state (one ΔE shared by the
layers' heads), accuracy by the parameter's undirected distance to the question in the
dependency graph (1..8, 9 = farther or unconnected, 0 = the question itself).

The `probe` section (`IGSMProbeSettings`), defaults = the paper's med recipe:
  steps 100000, batch_size 256, lr 0.002, warmup_steps 0, schedule "linear" (to 0),
  weight_decay 0.01, eval_batches 8 (of batch_size problems per split), tasks (all six),
  queries 10 (per task and problem), delta "per_task" | "shared", rank 8, layer "final",
  ood_ops () (= all of the task's), depth True, depth_steps 0 (= steps), control True,
  mistakes 0 (problems decoded for the own-mistakes analysis, `igsm_mistakes.py`),
  checkpoint_step -1, log_every 200.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

from physics_lm.config import ConfigError
from physics_lm.data.igsm.gen.probe_names import name_len
from physics_lm.data.igsm.task import IGSMTask
from physics_lm.modes import Handler
from physics_lm.probing import heads, igsm_mistakes, igsm_plots, igsm_probe
from physics_lm.probing import igsm_queries as iq
from physics_lm.probing import train_probe as tp
from physics_lm.probing.capture import residual_layer_names
from physics_lm.train import sharding

DIST_BUCKETS = iq.MAX_DIST + 2  # 0 (the question) .. MAX_DIST, MAX_DIST + 1 = farther


@dataclasses.dataclass(frozen=True)
class IGSMProbeSettings:
    """The `probe` section of an iGSM run (module docstring)."""

    steps: int = 100_000
    batch_size: int = 256
    lr: float = 0.002
    warmup_steps: int = 0
    schedule: str = "linear"
    weight_decay: float = 0.01
    eval_batches: int = 8
    tasks: tuple[str, ...] = iq.TASKS
    queries: int = 10
    delta: str = "per_task"
    rank: int = 8
    layer: str = "final"
    ood_ops: tuple[int, ...] = ()
    depth: bool = True
    depth_steps: int = 0
    control: bool = True
    mistakes: int = 0
    checkpoint_step: int = -1
    log_every: int = 200

    def __post_init__(self) -> None:
        for key in ("steps", "batch_size", "eval_batches", "queries", "rank", "log_every"):
            if getattr(self, key) < 1:
                raise ConfigError(f"probe.{key}={getattr(self, key)!r}: must be >= 1")
        if not self.lr > 0 or self.warmup_steps < 0 or self.weight_decay < 0:
            raise ConfigError(f"probe.lr/warmup_steps/weight_decay="
                              f"{(self.lr, self.warmup_steps, self.weight_decay)!r}: need lr > 0,"
                              " the others >= 0")
        if self.schedule not in tp.SCHEDULES:
            raise ConfigError(f"probe.schedule={self.schedule!r}: one of {tp.SCHEDULES}")
        bad = [t for t in self.tasks if t not in iq.TASKS]
        if bad or not self.tasks or len(set(self.tasks)) != len(self.tasks):
            raise ConfigError(f"probe.tasks={list(self.tasks)!r}: distinct names among {iq.TASKS}")
        if self.delta not in igsm_probe.DELTAS:
            raise ConfigError(f"probe.delta={self.delta!r}: one of {igsm_probe.DELTAS}")
        if self.depth_steps < 0 or self.mistakes < 0:
            raise ConfigError(f"probe.depth_steps/mistakes={(self.depth_steps, self.mistakes)!r}"
                              ": must be >= 0")

    def fit(self, seed: int, steps: int | None = None) -> tp.FitSettings:
        return tp.FitSettings(steps=steps or self.steps, batch_size=self.batch_size, lr=self.lr,
                              warmup_steps=self.warmup_steps, eval_batches=self.eval_batches,
                              kinds=("linear",), schedule=self.schedule,
                              weight_decay=self.weight_decay, log_every=self.log_every,
                              seed=seed)


def eval_tasks(task: IGSMTask, ood_ops: tuple[int, ...]) -> dict[str, IGSMTask]:
    """Scoring sets: "id" (test bins, the training op law) and "op=k" per OOD op (test bins)."""
    ops = ood_ops or task.ood_ops
    base = dataclasses.replace(task, split="test", op=None, reask=False, groups=1,
                               pool=0).probed()
    out = {"id": base}
    for k in ops:
        t = dataclasses.replace(base, op=k, seq_len=1 << 16)
        out[f"op={k}"] = dataclasses.replace(t, seq_len=max(task.seq_len, t.min_seq_len))
    return out


def make_eval_fn(problem: tp.ProbeProblem, batch_size: int, seed: int, salt: int,
                 constrain: Any = lambda b: b):
    """Jitted `(state, frozen, i) -> {"pred": [N, B, Q], meta...}` on held-out batch i."""
    cmask = heads.class_mask(problem.num_classes)
    key = jax.random.fold_in(jax.random.fold_in(jax.random.key(seed), tp.STREAM_PROBE_EVAL),
                             salt)

    def ev(state: tp.ProbeState, frozen: Any, i: jax.Array) -> dict[str, jax.Array]:
        batch = constrain(problem.sample_fn(jax.random.fold_in(key, i), batch_size))
        feats = problem.features_fn(state.params["features"], frozen, batch.inputs)
        logits = heads.apply_heads(state.params["heads"], tp.normalise(feats, state.norm), cmask,
                                   remat=False)["linear"]  # [N, B, Q, G, C]
        g = batch.inputs["meta"]["task"]
        own = jnp.take_along_axis(logits, g[None, :, :, None, None], axis=3)[..., 0, :]
        return {"pred": jnp.argmax(own, axis=-1), **batch.inputs["meta"]}

    return jax.jit(ev)


def collect(ev, state, frozen, num_batches: int) -> dict[str, np.ndarray]:
    """Every scored query of `num_batches` batches, flattened: pred [N, n] and meta [n]."""
    parts = [jax.device_get(ev(state, frozen, i)) for i in range(num_batches)]
    out = {k: np.concatenate([np.asarray(p[k]).reshape(-1) for p in parts]) for k in parts[0]
           if k != "pred"}
    pred = np.concatenate([np.asarray(p["pred"]).reshape(p["pred"].shape[0], -1) for p in parts],
                          axis=1)
    keep = out["label"] >= 0
    return {"pred": pred[:, keep], **{k: v[keep] for k, v in out.items()}}


def _num(x: float) -> float | None:
    return None if math.isnan(x) else float(x)


def task_scores(q: dict[str, np.ndarray], task_index: int, name: str, layer: int = -1
                ) -> dict[str, Any]:
    """Accuracy of one task's probe on its queries (see module docstring for the keys)."""
    sel = q["task"] == task_index
    y, p = q["label"][sel], q["pred"][layer][sel]
    hit = p == y
    with np.errstate(invalid="ignore"):
        out = {"acc": _num(hit.mean()) if y.size else None, "n": int(y.size)}
        if name == "value":
            known = y < 23
            out.update(acc_known=_num(hit[known].mean()) if known.any() else None,
                       n_known=int(known.sum()))
        else:
            pos = y == 1
            out.update(acc_pos=_num(hit[pos].mean()) if pos.any() else None,
                       acc_neg=_num(hit[~pos].mean()) if (~pos).any() else None,
                       n_pos=int(pos.sum()))
    return out


def majority(q: dict[str, np.ndarray], task_index: int) -> float | None:
    y = q["label"][q["task"] == task_index]
    return float(np.bincount(y).max() / y.size) if y.size else None


def depth_table(q: dict[str, np.ndarray]) -> dict[str, list]:
    """nece accuracy [layer][distance bucket] and counts [bucket]."""
    d = np.minimum(q["dist"], DIST_BUCKETS - 1)
    acc = [[_num(np.mean(q["pred"][n][d == t] == q["label"][d == t])) if (d == t).any()
            else None for t in range(DIST_BUCKETS)] for n in range(q["pred"].shape[0])]
    return {"acc": acc, "n": np.bincount(d, minlength=DIST_BUCKETS).tolist()}


class Prober:
    """Fits and scores one probe configuration on the trained model and its control."""

    def __init__(self, loaded: Any, settings: IGSMProbeSettings, layers: tuple[str, ...],
                 tasks: tuple[str, ...], steps: int, splits: tuple[str, ...] | None = None,
                 qv_rank: int = 0) -> None:
        exp = loaded.exp
        self.loaded, self.layers, self.tasks = loaded, layers, tasks
        self.fit_settings = settings.fit(loaded.cfg.seed, steps)
        shapes = jax.eval_shape(lambda: loaded.params)
        make = lambda t: igsm_probe.make_problem(
            t, exp.model, shapes, layers, tasks, settings.queries, settings.delta,
            settings.rank, qv_rank, axis_rules=sharding.activation_rules(exp.mesh))
        self.problem = make(exp.task)
        self.replicated = NamedSharding(exp.mesh, PartitionSpec())
        self.steps = tp.jit_steps(self.problem, self.fit_settings,
                                  batch_constraint=exp.constrain_batch, replicated=self.replicated)
        self.evals = {name: make_eval_fn(make(t), settings.batch_size, loaded.cfg.seed, i,
                                         exp.constrain_batch)
                      for i, (name, t) in enumerate(eval_tasks(exp.task, settings.ood_ops).items())
                      if splits is None or name in splits}
        self.D = exp.model.cfg.d_model

    def run(self, frozen: Any, name: str) -> tuple[dict[str, dict], dict[str, float], Any]:
        tx, jit_train, _ = self.steps
        state = jax.device_put(tp.init_probe_state(self.problem, tx, self.fit_settings,
                                                   len(self.layers), self.D), self.replicated)
        state, last = tp.fit(jit_train, state, frozen, self.fit_settings, name=f"probe[{name}]")
        queries = {split: collect(ev, state, frozen, self.fit_settings.eval_batches)
                   for split, ev in self.evals.items()}
        return queries, last, state


def _check(loaded: Any, settings: IGSMProbeSettings) -> None:
    exp = loaded.exp
    dp = sharding.data_parallel_size(exp.mesh)
    if settings.batch_size % dp:
        raise ConfigError(f"probe.batch_size={settings.batch_size}: must divide by the "
                          f"data-parallel size {dp}")
    known = residual_layer_names(exp.model.cfg.num_layers)
    if settings.layer not in known:
        raise ConfigError(f"probe.layer={settings.layer!r}: one of {list(known)}")
    cfg = exp.model.cfg
    longest = max(t.seq_len for t in eval_tasks(exp.task, settings.ood_ops).values())
    need = longest + iq.query_len(settings.tasks, name_len())
    if cfg.pos == "absolute" and cfg.max_len < need:
        raise ConfigError(f"model.max_len={cfg.max_len}: absolute positions cannot place V-probe"
                          f" queries after rows of {longest} tokens (need max_len >= {need})")


def _run(loaded: Any, settings: IGSMProbeSettings) -> dict[str, Any]:
    """Probes the run (and its control); the doc written to probe/igsm.json (module docstring)."""
    _check(loaded, settings)
    exp, tasks = loaded.exp, tuple(settings.tasks)
    models = {"trained": loaded.params}
    if settings.control:
        models["control"] = loaded.control_params()
    doc: dict[str, Any] = {"checkpoint_step": loaded.step, "task": exp.task.describe(),
                           "settings": dataclasses.asdict(settings), "tasks": list(tasks)}
    results: dict[str, Any] = {t: {} for t in tasks}
    final_loss, states = {}, {}
    with jax.set_mesh(exp.mesh):
        main = Prober(loaded, settings, (settings.layer,), tasks, settings.steps)
        for model, params in models.items():
            queries, final_loss[model], states[model] = main.run(params, model)
            for split, q in queries.items():
                for g, t in enumerate(tasks):
                    cell = results[t].setdefault(split, {"majority": majority(q, g)})
                    cell[model] = task_scores(q, g, t)
        doc.update(splits=list(main.evals), final_loss=final_loss, results=results)
        if settings.depth:
            layers = residual_layer_names(exp.model.cfg.num_layers)
            deep = Prober(loaded, settings, layers, ("nece",),
                           settings.depth_steps or settings.steps, splits=("id",))
            depth: dict[str, Any] = {"layers": list(layers),
                                     "distances": list(range(DIST_BUCKETS))}
            for model, params in models.items():
                queries, _, _ = deep.run(params, model)
                table = depth_table(queries["id"])
                depth[model], depth["n"] = table["acc"], table["n"]
            doc["depth"] = depth
        if settings.mistakes:
            doc.update(igsm_mistakes.analyse(loaded, settings, main, states["trained"]))
    return doc


def _plots(doc: dict[str, Any], out_dir: Path) -> None:
    igsm_plots.write_all(doc, Path(out_dir))


PROBE = Handler(settings=IGSMProbeSettings, run=_run, step_field="checkpoint_step",
                plots=_plots)
