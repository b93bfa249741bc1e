"""Probing the model's own mistakes (Part 2.1 Fig. 8; the seed of Part 2.2's regret detector).

The trained V-probes (`igsm_run.py`) are run along the model's *generated* solutions: problems
of the hardest in-distribution cell (op = max op, test bins) are decoded greedily, judged, and
for every generation whose first error names a parameter X of the problem (`not_computable`,
`wrong_dependency`, `wrong_value`, ...) one query ``<start> X <end>`` is placed at the end of the
last sentence before the error (the ``<solution>`` token if it is the first). Labels come from
`text/probe_labels.row_labels` along the generation up to its first wrong step (SPEC §15, last
paragraph). Reported per error kind: how often the `can_next` / `nece_next` probes predict
"true" for X, beside the true label rates -- a model that computes a parameter that is not
ready and whose can_next probe says "ready" *believes* it could; a probe that says "not ready"
knows it erred (detection). Also the `nece` probe, asked at the end of the question, on the
unnecessary parameters of correct generations (does the model think they are necessary?).

Writes doc["mistakes"] and one record per probed query to `probe/igsm_mistakes.jsonl`.
"""

from __future__ import annotations

import collections
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from physics_lm.data.igsm.gen.probe_names import name_len
from physics_lm.data.igsm.text.judge import judge_problem
from physics_lm.data.igsm.text.parser import parse_problem
from physics_lm.data.igsm.text.probe_labels import row_labels, sentence_end_positions
from physics_lm.data.igsm.text.vocab import get_vocab
from physics_lm.eval import igsm_eval
from physics_lm.probing import heads, igsm_probe
from physics_lm.probing import igsm_queries as iq
from physics_lm.probing import train_probe as tp

ROW_PROBES = ("can_next", "nece_next", "known")
MAX_UNNECESSARY = 4  # nece queries per correct generation
_BUCKET = 64


def _queries(row: dict[str, Any]) -> tuple[list[int], list[dict[str, Any]]]:
    """(token ids, queries) of one judged generation; queries: {"param", "name", "pos",
    "kind": "wrong" | "unnecessary", "labels": {task: 0/1}}."""
    v = get_vocab()
    problem = parse_problem(row["problem"])
    ids = v.encode(row["prompt"]) + v.encode(row["generated"])  # each decodes its own ids
    start, ends = sentence_end_positions(ids, v)
    if start is None or row["solution"] is None:
        return ids, []
    out = []
    trace: list = []  # (sentence, param) of every named sentence
    judge_problem(problem, row["solution"], trace=trace)
    if not row["correct"] and row["first_error"] is not None:
        wrong = [p for n, p in trace if n == row["first_error"]]
        w = row["first_error"]
        labels = row_labels(problem, row["solution"]) if wrong and w <= len(ends) else None
        before = [n for n, _ in trace if n < w]
        # The label walk stops at a parameter defined twice, which the judge accepts under a new
        # symbol: then its last row is older than the query's position, and the query is dropped.
        if labels is not None and labels.sentences[-1] == (before[-1] if before else -1):
            col = problem.param_index[wrong[0]]
            out.append({"kind": "wrong", "error_kind": row["error_kind"],
                        "name": problem.name(wrong[0]), "pos": start if w == 0 else ends[w - 1],
                        "labels": {t: int(getattr(labels, t)[-1, col]) for t in ROW_PROBES}})
    if row["correct"] and row["n_unnecessary"]:
        extra = [p for _, p in trace if p not in problem.necessary]
        for p in list(dict.fromkeys(extra))[:MAX_UNNECESSARY]:
            out.append({"kind": "unnecessary", "error_kind": None, "name": problem.name(p),
                        "pos": start - 1, "labels": {"nece": 0}})
    return ids, out


def _host_batch(items: list[tuple[list[int], dict]], context: int, L: int, F: int):
    """Packed inputs (`igsm_queries.Packed`, leading [B, F]) for one query per row."""
    v = get_vocab()
    B = len(items)
    rows = np.full((B, context), v.pad_id, np.int32)
    q_tok = np.full((B, 1, L), v.pad_id, np.int32)
    end, pos = np.zeros((B, 1), np.int32), np.zeros((B, 1), np.int32)
    for b, (ids, q) in enumerate(items):
        rows[b, :min(len(ids), context)] = ids[:context]
        name = v.encode(q["name"])[: L - 2]
        q_tok[b, 0, : len(name) + 2] = [v.start_id, *name, v.end_id]
        end[b, 0], pos[b, 0] = len(name) + 1, q["pos"]
    fake = iq.Queries(jnp.asarray(q_tok), jnp.asarray(end), jnp.asarray(pos), *(None,) * 5)
    packed = iq.pack(jnp.asarray(rows), fake, context)
    return jax.tree.map(lambda x: jnp.repeat(x[:, None], F, axis=1), packed)


def _predictor(problem: tp.ProbeProblem):
    cmask = heads.class_mask(problem.num_classes)

    @jax.jit
    def predict(state: tp.ProbeState, frozen: Any, packed: Any) -> jax.Array:
        """int32[B, F, G]: each task's prediction from each forward group's features."""
        feats = problem.features_fn(state.params["features"], frozen, {"packed": packed})
        logits = heads.apply_heads(state.params["heads"], tp.normalise(feats, state.norm),
                                   cmask, remat=False)["linear"]  # [1, B, F, G, C]
        return jnp.argmax(logits[0], axis=-1)

    return predict


def analyse(loaded: Any, settings: Any, prober: Any, state: tp.ProbeState) -> dict[str, Any]:
    """Decodes `settings.mistakes` problems and probes the generations (module docstring)."""
    exp, tasks = loaded.exp, tuple(settings.tasks)
    top = exp.task.resolved_max_op
    cell = f"op={top}"
    ec = igsm_eval.IGSMEvalConfig(n=settings.mistakes, decode_batch=min(settings.mistakes, 64),
                                  seed=loaded.cfg.seed)
    gens = igsm_eval.generate_cell(exp.model.cfg, loaded.params, exp.task, cell, ec,
                                   jax.random.key(loaded.cfg.seed))
    items = [(ids, q) for row in gens for ids, qs in [_queries(row)] for q in qs]
    summary: dict[str, Any] = {"cell": cell, "n_generations": len(gens),
                               "n_correct": sum(r["correct"] for r in gens),
                               "first_error_kinds": dict(collections.Counter(
                                   r["error_kind"] for r in gens if not r["correct"]))}
    if not items:
        return {"mistakes": {**summary, "n_queries": 0}}
    longest = max(len(ids) for ids, _ in items)
    context = -(-longest // _BUCKET) * _BUCKET
    L = iq.query_len(("nece",), name_len())
    F = len(igsm_probe.forward_groups(tasks, settings.delta))
    predict = _predictor(prober.problem)
    B = 16
    records = []
    with jax.set_mesh(exp.mesh):
        for s in range(0, len(items), B):
            chunk = items[s:s + B]
            chunk = chunk + [chunk[-1]] * (B - len(chunk))  # one shape
            pred = np.asarray(predict(state, loaded.params, _host_batch(chunk, context, L, F)))
            for (_, q), p_FxG in list(zip(chunk, pred, strict=True))[: len(items) - s]:
                # per-task ΔE: task g's features come from forward group g; shared: group 0
                probs = {t: int(p_FxG[g if F > 1 else 0, g]) for g, t in enumerate(tasks)
                         if t in q["labels"]}
                records.append({**q, "predicted": probs})
    by_kind: dict[str, Any] = {}
    for r in records:
        key = r["error_kind"] or "unnecessary"
        d = by_kind.setdefault(key, {"n": 0})
        d["n"] += 1
        for t, y in r["labels"].items():
            if t in r["predicted"]:
                d.setdefault(f"{t}_predicted_true", 0)
                d.setdefault(f"{t}_label_true", 0)
                d[f"{t}_predicted_true"] += r["predicted"][t]
                d[f"{t}_label_true"] += y
    for d in by_kind.values():
        for k in [k for k in d if k != "n"]:
            d[k] = d[k] / d["n"]
    summary.update(n_queries=len(records), by_kind=by_kind)
    return {"mistakes": summary, "records": {"mistakes": records}}
