"""`mode=regret` for iGSM runs: Part 2.2's table of retry upon regret against beam search.

  python -m physics_lm.main --config=configs/igsm.py:... --config.mode=regret --workdir=RUN

For every evaluator cell (`data/igsm/cells.py`, test template bins) the same `n` problems are
decoded by each row of the paper's table and judged (`eval/igsm_eval.py`):
  beam<k>         the original model with beam search, k in `beams` (beam1 = greedy);
  regret_<d>      greedy decoding with retry upon regret (`eval/regret.py`), detector d:
                  v1 / v2 (the can_next V-probes of `probing/regret_detector.py`, `retries`
                  retries per solution), vP (the judge: a perfect detector, `retries`) and
                  vP50 (the judge, `many_retries`).
  regret_<d>_beam<k>  the same detectors over beam search of width k, k > 1 in
                  `regret_beams` (`eval/beam_regret.py`: the solution is committed one
                  sentence per round, each sentence the best of a k-beam search or, after a
                  regret, resampled).
Detector quality on the model's own greedy generations (the same problems, the hook in
observe-only mode): `recall` = share of first wrong steps flagged (the paper: a model trained on
error-free data "knows" ≈60% of its mistakes), `false_alarm` = share of right steps (before the
first error) flagged, both also by the first error's kind. The paper's med_pq op=23 numbers are
in `PAPER` for comparison.

regret/igsm.json: {"cells", "rows", "table": {row: {cell: evaluator metrics + retries_mean}},
"detectors": {v: {"fit": meta, "quality": {cell: ...}}}, "paper", "settings"}; every generation
(row, cell, verdict, retries, per-sentence flags) goes to regret/igsm_generations.jsonl.

The `regret` section (`IGSMRegretSettings`): n 4096, cells () (all), beams (1, 4, 16, 32),
detectors ("v1", "v2", "vP", "vP50"), regret_beams (1, 4) (the paper's beam 1 and 4),
retries 10, many_retries 50, resample_temperature 1.0,
v1_steps 100000 and v2_steps 10000 (probe fits; batch_size 256, lr 0.002, weight_decay 0.01,
queries 10: the Part 2.1 recipe, linear decay), decode_batch 256, seed 0, checkpoint_step -1.
"""

from __future__ import annotations

import collections
import dataclasses
from typing import Any

import jax
import numpy as np
from absl import logging

from physics_lm.config import ConfigError
from physics_lm.data.igsm import cells as cells_lib
from physics_lm.data.igsm.text.vocab import get_vocab
from physics_lm.eval import igsm_eval
from physics_lm.eval.beam_regret import beam_regret
from physics_lm.eval.decode import generate
from physics_lm.eval.regret import RegretHook
from physics_lm.modes import Handler
from physics_lm.probing import regret_detector
from physics_lm.probing.igsm_run import IGSMProbeSettings

DETECTORS = {"v1": ("probe", False), "v2": ("probe", False), "vP": ("perfect", False),
             "vP50": ("perfect", True)}  # name -> (hook kind, uses many_retries)
SENTENCE_TOKENS = 40  # step budget per retry (a solution sentence is ~15-30 tokens)
PAPER = {"cell": "med_pq op=23", "beam1": 76.8, "beam32": 79.1, "regret_v1": 79.4,
         "regret_vP": 84.1, "regret_vP50": 86.2}


@dataclasses.dataclass(frozen=True)
class IGSMRegretSettings:
    """The `regret` section of an iGSM run (module docstring)."""

    n: int = 4096
    cells: tuple[str, ...] = ()
    beams: tuple[int, ...] = (1, 4, 16, 32)
    detectors: tuple[str, ...] = ("v1", "v2", "vP", "vP50")
    regret_beams: tuple[int, ...] = (1, 4)
    retries: int = 10
    many_retries: int = 50
    resample_temperature: float = 1.0
    v1_steps: int = 100_000
    v2_steps: int = 10_000
    batch_size: int = 256
    lr: float = 0.002
    weight_decay: float = 0.01
    queries: int = 10
    decode_batch: int = 256
    seed: int = 0
    checkpoint_step: int = -1

    def __post_init__(self) -> None:
        for key in ("n", "retries", "many_retries", "v1_steps", "v2_steps", "batch_size",
                    "queries", "decode_batch"):
            if getattr(self, key) < 1:
                raise ConfigError(f"regret.{key}={getattr(self, key)!r}: must be >= 1")
        bad = [d for d in self.detectors if d not in DETECTORS]
        if bad:
            raise ConfigError(f"regret.detectors={list(self.detectors)!r}: unknown {bad}; "
                              f"known: {list(DETECTORS)}")
        for key in ("beams", "regret_beams"):
            if any(k < 1 for k in getattr(self, key)):
                raise ConfigError(f"regret.{key}={list(getattr(self, key))!r}: widths must be "
                                  ">= 1")
        if not self.resample_temperature > 0:
            raise ConfigError(f"regret.resample_temperature={self.resample_temperature!r}: "
                              "must be > 0 (a greedy retry repeats the rejected sentence)")

    def probe_settings(self, version: str) -> IGSMProbeSettings:
        steps = self.v1_steps if version == "v1" else self.v2_steps
        return IGSMProbeSettings(steps=steps, batch_size=self.batch_size, lr=self.lr,
                                 weight_decay=self.weight_decay, queries=self.queries,
                                 log_every=max(steps // 10, 1))


def regret_decoder(model_cfg: Any, params: Any, hook: RegretHook, args: dict[str, Any]):
    """A `igsm_eval.CellDecoder`: greedy decoding with `hook`, `SENTENCE_TOKENS` more steps per
    allowed retry."""
    vocab = get_vocab()

    def decode(prompts: np.ndarray, lens: np.ndarray, max_new: int, key: jax.Array):
        extra = hook.max_retries * SENTENCE_TOKENS if hook.act else 0
        return generate(model_cfg, params, key, prompts, lens, max_new=max_new,
                        temperature=0.0, eos_id=vocab.eos_id, pad_id=vocab.pad_id, hook=hook,
                        hook_args=args, max_steps=max_new + extra)

    return decode


def beam_regret_decoder(model_cfg: Any, params: Any, hook: RegretHook, args: dict[str, Any],
                        beam: int):
    """A `igsm_eval.CellDecoder`: retry upon regret over a `beam`-wide beam search, one
    sentence per round (`eval/beam_regret.py`)."""
    vocab = get_vocab()

    def decode(prompts: np.ndarray, lens: np.ndarray, max_new: int, key: jax.Array):
        return beam_regret(model_cfg, params, key, prompts, lens, hook=hook, hook_args=args,
                           beam=beam, max_new=max_new, eos_id=vocab.eos_id,
                           pad_id=vocab.pad_id, sentence_len=SENTENCE_TOKENS)

    return decode


def detector_quality(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Recall on first wrong steps and false alarms on right steps, from observe-only flags."""
    hit, asked = collections.Counter(), collections.Counter()
    alarms = right = 0
    for r in rows:
        flags = r["flags"]
        w = r["first_error"] if not r["correct"] else None
        stop = min(len(flags), w if w is not None else len(flags))
        right += sum(f >= 0 for f in flags[:stop])
        alarms += sum(f == 1 for f in flags[:stop])
        if w is not None and w < len(flags) and flags[w] >= 0:
            for kind in ("all", r["error_kind"]):
                asked[kind] += 1
                hit[kind] += flags[w] == 1
    ratio = lambda a, b: a / b if b else None
    return {"recall": ratio(hit["all"], asked["all"]), "n_wrong": asked["all"],
            "false_alarm": ratio(alarms, right), "n_right": right,
            "recall_by_kind": {k: ratio(hit[k], asked[k]) for k in sorted(asked) if k != "all"},
            "n_by_kind": {k: asked[k] for k in sorted(asked) if k != "all"}}


def _summary(rows: list[dict[str, Any]], in_dist: bool) -> dict[str, Any]:
    out = igsm_eval.summarize(rows, in_dist)
    if rows and "retries" in rows[0]:
        out["retries_mean"] = float(np.mean([r["retries"] for r in rows]))
    return out


def _run(loaded: Any, s: IGSMRegretSettings) -> dict[str, Any]:
    exp = loaded.exp
    model_cfg, params = exp.model.cfg, loaded.host_params
    cells = cells_lib.eval_cells(exp.task, seen=True)  # `seen:` cells only when named
    names = list(s.cells) or list(cells_lib.eval_cells(exp.task))
    unknown = [c for c in names if c not in cells]
    if unknown:
        raise ConfigError(f"regret.cells={list(s.cells)!r}: unknown {unknown}; known: "
                          f"{list(cells)}")
    if len(set(names)) != len(names):
        raise ConfigError(f"regret.cells={list(s.cells)!r}: a cell is named twice")
    detectors = {v: regret_detector.fit_or_load(loaded, v, s.probe_settings(v),
                                                loaded.workdir / "regret")
                 for v in ("v1", "v2") if v in s.detectors}
    args = {v: d.args(params, 0.0) for v, d in detectors.items()}
    hook = lambda kind, r, act=True: RegretHook(model_cfg, kind, r, act, s.resample_temperature)
    decoders: dict[str, Any] = {}
    for k in s.beams:
        decoders[f"beam{k}"] = (dataclasses.replace(
            igsm_eval.IGSMEvalConfig(), decoder="greedy" if k == 1 else "beam", beam=k), None)
    for d in s.detectors:
        kind, many = DETECTORS[d]
        a = args.get(d, {"temperature": np.float32(0.0)})
        h = hook(kind, s.many_retries if many else s.retries)
        for k in s.regret_beams:
            decoders[f"regret_{d}" if k == 1 else f"regret_{d}_beam{k}"] = (
                None, regret_decoder(model_cfg, params, h, a) if k == 1 else
                beam_regret_decoder(model_cfg, params, h, a, k))
    for v in detectors:
        decoders[f"observe_{v}"] = (None, regret_decoder(model_cfg, params,
                                                         hook("probe", 0, False), args[v]))
    base = igsm_eval.IGSMEvalConfig(n=s.n, decode_batch=s.decode_batch, seed=s.seed)
    table: dict[str, dict[str, Any]] = {row: {} for row in decoders if not row.startswith("obs")}
    quality: dict[str, dict[str, Any]] = {v: {} for v in detectors}
    records = []
    for name in names:
        in_dist = igsm_eval.in_distribution(exp.task, name)
        for row, (ec, decode) in decoders.items():
            ec = base if ec is None else dataclasses.replace(
                base, decoder=ec.decoder, beam=ec.beam,
                decode_batch=max(1, s.decode_batch // ec.beam))
            rows = igsm_eval.generate_cell(model_cfg, params, cells[name], name, ec,
                                           igsm_eval.decode_key(s.seed, name), decode=decode)
            records += [{**r, "row": row} for r in rows]
            if row.startswith("observe_"):
                quality[row[len("observe_"):]][name] = detector_quality(rows)
                continue
            table[row][name] = _summary(rows, in_dist)
            logging.info("regret %s %s: accuracy %.3f (n=%d)", name, row,
                         table[row][name]["accuracy"], len(rows))
    return {"checkpoint_step": loaded.step, "settings": dataclasses.asdict(s), "cells": names,
            "rows": list(table), "table": table, "paper": PAPER,
            "detectors": {v: {"fit": d.meta, "quality": quality[v]}
                          for v, d in detectors.items()},
            "records": {"generations": records}}


def _plots(doc: dict[str, Any], out_dir: Any) -> None:
    """regret_table.png: accuracy (95% interval) of every row, grouped by cell."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        logging.info("matplotlib is not installed: skipping the regret plot")
        return
    rows, cells = doc["rows"], doc["cells"]
    width = 0.8 / max(len(rows), 1)
    fig, ax = plt.subplots(figsize=(2 + 1.6 * len(cells), 3.6), layout="constrained")
    for i, row in enumerate(rows):
        m = [doc["table"][row][c] for c in cells]
        acc = np.array([x["accuracy"] for x in m])
        err = np.array([[a - x["acc_lo"], x["acc_hi"] - a] for a, x in zip(acc, m, strict=True)])
        ax.bar(np.arange(len(cells)) + i * width, acc, width, yerr=err.T, label=row, capsize=2)
    ax.set_xticks(np.arange(len(cells)) + 0.4 - width / 2, cells)
    ax.set_ylim(0, 1)
    ax.set_ylabel("accuracy")
    ax.legend(fontsize=7, ncols=2)
    fig.savefig(out_dir / "regret_table.png", dpi=120)
    plt.close(fig)


REGRET = Handler(settings=IGSMRegretSettings, run=_run, step_field="checkpoint_step",
                 plots=_plots)
