"""The Batch pytree and the Task protocol shared by every data family.

A task's `sample(key, batch_size)` is pure and jittable with static shapes, so the trainer
can call it *inside* the jitted training step: data never crosses the host boundary and the
same (seed, step) gives the same batch on any number of devices.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple, Protocol

import jax


class Batch(NamedTuple):
    """One batch of training sequences (a pytree; every leaf has leading dim B).

    Attributes:
      tokens: int32[B, T] input ids, BOS first, padded with the task's pad id.
      loss_mask: float32[B, T]; mask[b, t] weighs the loss of predicting tokens[b, t + 1]
        from position t (the last column is always 0).
      labels: task-specific int32/float32 arrays with leading dims [B, ...] (NT ancestors,
        probe labels, op counts, ...). Keys are stable names documented by each task.
    """

    tokens: jax.Array
    loss_mask: jax.Array
    labels: Mapping[str, jax.Array]


class Task(Protocol):
    """What the trainer, evaluators and probes need from a data family."""

    name: str
    seq_len: int  # T: static length of every sampled row
    vocab_size: int  # the model's vocabulary must be at least this large
    pad_id: int
    bos_id: int
    eos_id: int

    def sample(self, key: jax.Array, batch_size: int) -> Batch:
        """Pure, jittable: draws `batch_size` fresh sequences from `key`."""
        ...

    def heldout(self) -> Task:
        """The task the held-out `eval_loss` is measured on (iGSM: the test template bins; a
        family with no held-out part returns itself and is sampled from the eval key stream)."""
        ...

    def batch_metrics(self, batch: Batch) -> Mapping[str, jax.Array]:
        """Scalars about a sampled batch, logged with each train step (iGSM: the share of rows
        that are valid and fit the context); jittable; may be empty."""
        ...

    def describe(self) -> Mapping[str, Any]:
        """JSON-able facts about the task (for config.json and logs)."""
        ...
