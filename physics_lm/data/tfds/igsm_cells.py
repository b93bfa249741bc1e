"""`igsm_eval_cells`: the Part 2.1 evaluation cells of a training task as frozen TFDS splits.

One config per training problem class and format (`BASE_TASKS` x pq/qp: med_pq, med_qp, hard_pq,
hard_qp, and the CPU-sized smoke_pq / scaled_pq of configs/igsm.py), one split per evaluation cell
(`cells.eval_cells`: op<=M, op=M, the OOD ops, reask; split names by `split_name`), each split
exactly `cells.cell_batch(task, seed, cell, n)`: the rows the evaluator samples with
`eval.seed=seed, eval.n=n`, so `eval.dataset=tfds:igsm_eval_cells/<config>` scores a model on
the very problems it would have drawn. Default n = 4,096 (the paper's count), seed 0.

Per example: text (problem, question, solution, answer; "" where a row has none), tokens (the
row without padding: int32[min(length, T)]) and labels (every per-row label of
`IGSMTask.sample`: op, template_bin, question_kind, answer, sol_pos, ..., row_pos; the reask
labels are -1 outside the reask cell).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, ClassVar

import numpy as np
import tensorflow_datasets as tfds

from physics_lm.data.tfds import IGSM_BASES
from physics_lm.data.tfds.base import SizedConfigs

# base name -> IGSMTask kwargs of the training task the cells belong to (configs/igsm.py)
BASE_TASKS: dict[str, dict[str, Any]] = {
    "med": dict(preset="med", seq_len=768),
    "hard": dict(preset="hard", seq_len=1024),
    "smoke": dict(preset="custom", max_op=3, max_edge=6, seq_len=320),
    "scaled": dict(preset="custom", max_op=6, max_edge=10, seq_len=464),
}
SCALARS = ("op", "n_solution_params", "question_kind", "template_bin", "length", "valid",
           "overflow", "answer", "depth", "n_sentences", "n_template_params",
           "n_mentioned_params", "sol_pos", "ans_pos", "question_slot", "orig_question_slot",
           "orig_op")
TEXTS = ("problem", "question", "solution", "answer")
# The training-task settings a model and a set must share for the set's cells to be its cells.
PROBLEM_CLASS = ("preset", "max_op", "max_edge", "fmt", "train_bins")


def split_name(cell: str) -> str:
    """A TFDS split name for a cell name: op<=15 -> op_le_15, op=20 -> op_20, reask -> reask."""
    return cell.replace("<=", "_le_").replace("=", "_")


def training_task(base: str) -> Any:
    """The IGSMTask (training task) of a config base such as "med_pq"."""
    from physics_lm.data.igsm.task import IGSMTask

    problem, fmt = base.rsplit("_", 1)
    return IGSMTask(**BASE_TASKS[problem], fmt=fmt)


def problem_class(task: Any) -> dict[str, Any]:
    d = task.describe()
    return {k: d[k] for k in PROBLEM_CLASS}


def _texts(vocab: Any, tokens: np.ndarray) -> dict[str, str]:
    problem, solution, answer = vocab.split_example(tokens.tolist())
    question = ""
    if problem is not None:  # as `text.vocab.host_texts`
        question = (problem.split("? ", 1)[0] + "?" if problem.startswith("How many ")
                    else problem.rsplit(". ", 1)[-1])
    return {"problem": problem or "", "question": question, "solution": solution or "",
            "answer": answer or ""}


class IgsmEvalCells(SizedConfigs, tfds.core.GeneratorBasedBuilder):
    """The evaluation cells of an iGSM training task (module docstring)."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES: ClassVar[dict[str, str]] = {
        "1.0.0": "Cells of physics_lm.data.igsm.cells, sampled by IGSMTask.sample."}
    DEFAULT_N = 4096
    BUILDER_CONFIGS: ClassVar[list] = []  # below: the class must exist to name its configs

    def _info(self) -> tfds.core.DatasetInfo:
        from physics_lm.data.igsm import cells as cells_lib

        cfg = self.builder_config
        task = training_task(cfg.base)
        cells = {split_name(c): c for c in cells_lib.eval_cells(task)}
        unknown = [s for s in cfg.splits if s not in cells]
        if unknown:
            raise ValueError(f"igsm_eval_cells/{cfg.name}: unknown splits {unknown}; the cells "
                             f"of {cfg.base} are {', '.join(cells)}")
        if cfg.splits:
            cells = {s: c for s, c in cells.items() if s in cfg.splits}
        meta = {"base": cfg.base, "n": cfg.n, "seed": cfg.seed, "task": problem_class(task),
                "cells": cells}
        i32 = np.int32
        return tfds.core.DatasetInfo(
            builder=self, description=__doc__, disable_shuffling=True,
            metadata=tfds.core.MetadataDict(meta),
            features=tfds.features.FeaturesDict({
                "text": tfds.features.FeaturesDict({k: tfds.features.Text() for k in TEXTS}),
                "tokens": tfds.features.Tensor(shape=(None,), dtype=i32),
                "labels": tfds.features.FeaturesDict({
                    **{k: tfds.features.Scalar(dtype=i32) for k in SCALARS},
                    "row_pos": tfds.features.Tensor(shape=(None,), dtype=i32)})}))

    def _split_generators(self, dl_manager: Any) -> dict[str, Iterator]:
        del dl_manager
        cells = self.info.metadata["cells"]
        return {split: self._generate_examples(cell) for split, cell in cells.items()}

    def _generate_examples(self, cell: str) -> Iterator[tuple[int, dict[str, Any]]]:
        import jax

        from physics_lm.data.igsm import cells as cells_lib
        from physics_lm.data.igsm.text.vocab import get_vocab

        cfg, vocab = self.builder_config, get_vocab()
        batch = jax.device_get(cells_lib.cell_batch(training_task(cfg.base), cfg.seed, cell,
                                                    cfg.n))
        tokens, labels = np.asarray(batch.tokens), {k: np.asarray(v)
                                                    for k, v in batch.labels.items()}
        T = tokens.shape[1]
        for r in range(cfg.n):
            row = tokens[r, : min(int(labels["length"][r]), T)]
            yield r, {"text": _texts(vocab, row), "tokens": row,
                      "labels": {**{k: int(labels[k][r]) if k in labels else -1 for k in SCALARS},
                                 "row_pos": labels["row_pos"][r].astype(np.int32)}}


IgsmEvalCells.BUILDER_CONFIGS = [IgsmEvalCells.make_config(b) for b in IGSM_BASES]
