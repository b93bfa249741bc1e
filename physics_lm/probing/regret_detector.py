"""The regret detector of Part 2.2 §3: a `can_next` V-probe of the frozen model, trained on
error-free problems, then asked along the model's own generations (`eval/regret.py`).

Versions (the paper's): v1 is the Part 2.1 V-probe (a rank-8 update of the input embedding and a
linear head on the final hidden state); v2 adds more capacity (rank 32 on the embedding and rank
2 on the Q/V projections of every layer) and is trained briefly. Both are fitted with the
`train_probe` machinery on problems of the run's training distribution, and scored (can_next
accuracy, on ready and not-ready parameters) on the test template bins.

A trained detector is saved as `regret/detector_<version>.msgpack` in the run's workdir (written
atomically) with the settings and checkpoint it was fitted for, and reused when they match.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

import jax
import numpy as np
from absl import logging
from flax import serialization

from physics_lm.models import lora

VERSIONS = {"v1": {"rank": 8, "qv_rank": 0}, "v2": {"rank": 32, "qv_rank": 2}}


@dataclasses.dataclass(frozen=True)
class Detector:
    """A fitted can_next probe: `adapters` (one ΔE group), `heads`, `norm`, and `meta` (what it
    was fitted for, and its scores)."""

    adapters: Any
    heads: Any
    norm: Any
    meta: dict[str, Any]

    def args(self, base_params: Any, temperature: float) -> dict[str, Any]:
        """The `RegretHook` args: the LM with the probe's update merged, the head, the norm."""
        merged = lora.merge(base_params, self.adapters)
        return {"params": merged, "heads": self.heads, "norm": self.norm,
                "temperature": np.float32(temperature)}


def fit(loaded: Any, version: str, probe_settings: Any) -> Detector:
    """Trains detector `version` on the run in `loaded` (`probe_settings`: IGSMProbeSettings)."""
    from physics_lm.probing import igsm_run  # igsm_run imports the mistakes analysis, not us

    if version not in VERSIONS:
        raise ValueError(f"detector version={version!r}: one of {tuple(VERSIONS)}")
    spec = VERSIONS[version]
    settings = dataclasses.replace(probe_settings, tasks=("can_next",), delta="per_task",
                                   rank=spec["rank"], depth=False, control=False, mistakes=0)
    with jax.set_mesh(loaded.exp.mesh):
        prober = igsm_run.Prober(loaded, settings, (settings.layer,), ("can_next",),
                                  settings.steps, splits=("id",), qv_rank=spec["qv_rank"])
        queries, last, state = prober.run(loaded.params, f"regret-{version}")
    scores = igsm_run.task_scores(queries["id"], 0, "can_next")
    logging.info("regret detector %s: can_next accuracy %.3f (ready %.3f, not ready %.3f)",
                 version, scores["acc"] or 0, scores["acc_pos"] or 0, scores["acc_neg"] or 0)
    params = jax.device_get(state.params)
    meta = {"version": version, **spec, "checkpoint_step": loaded.step,
            "fit": fit_key(settings), "final_loss": last, "can_next": scores,
            "majority": igsm_run.majority(queries["id"], 0)}
    return Detector(jax.tree.map(lambda x: x[0], params["features"]), params["heads"],
                    jax.device_get(state.norm), meta)


def fit_key(settings: Any) -> dict[str, Any]:
    """What a saved detector must match to be reused."""
    keys = ("steps", "batch_size", "lr", "schedule", "weight_decay", "queries", "layer")
    return {k: getattr(settings, k) for k in keys}


def save(detector: Detector, path: Path) -> None:
    """Atomic write (tmp + rename): an interrupted save never leaves a half file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    blob = serialization.msgpack_serialize({
        "adapters": detector.adapters, "heads": detector.heads, "norm": detector.norm,
        "meta": json.dumps(detector.meta)})
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(blob)
    os.replace(tmp, path)


def load(path: Path) -> Detector:
    d = serialization.msgpack_restore(path.read_bytes())
    return Detector(d["adapters"], d["heads"], d["norm"], json.loads(d["meta"]))


def fit_or_load(loaded: Any, version: str, probe_settings: Any, directory: Path) -> Detector:
    """The saved detector if it was fitted with the same settings on the same checkpoint."""
    path = directory / f"detector_{version}.msgpack"
    want = fit_key(probe_settings)
    if path.exists():
        det = load(path)
        if det.meta.get("fit") == want and det.meta.get("checkpoint_step") == loaded.step:
            logging.info("regret detector %s: reusing %s", version, path)
            return det
        logging.info("regret detector %s: %s was fitted differently; refitting", version, path)
    det = fit(loaded, version, probe_settings)
    save(det, path)
    return det
