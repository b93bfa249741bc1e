"""Orbax checkpoints of the train state: the only module that talks to orbax.

Orbax writes each step into a temporary directory and renames it when complete, so a crash
mid-save never leaves a half-written "latest" checkpoint; restore always sees finished steps.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jax
import orbax.checkpoint as ocp


class Checkpointer:
    """Periodic, keep-N checkpoints under `workdir/checkpoints`, restored with given shardings."""

    def __init__(self, workdir: str | Path, *, every: int, keep: int) -> None:
        self.every = every
        options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True,
                                               enable_async_checkpointing=True)
        self._mgr = ocp.CheckpointManager(Path(workdir).absolute() / "checkpoints",
                                          options=options)

    def latest_step(self) -> int | None:
        return self._mgr.latest_step()

    def should_save(self, step: int) -> bool:
        return step % self.every == 0

    def reached_preemption(self, step: int) -> bool:
        """True on every host once the cluster scheduler announced a preemption (multi-host)."""
        return bool(self._mgr.reached_preemption(step))

    def save(self, step: int, state: Any) -> None:
        self._mgr.save(step, args=ocp.args.StandardSave(state), force=True)

    def restore(self, step: int, abstract_state: Any) -> Any:
        """`abstract_state`: ShapeDtypeStructs carrying the target shardings (any mesh)."""
        return self._mgr.restore(step, args=ocp.args.StandardRestore(abstract_state))

    def wait(self) -> None:
        self._mgr.wait_until_finished()

    def close(self) -> None:
        self._mgr.wait_until_finished()
        self._mgr.close()


def abstract_like(tree: Any, shardings: Any) -> Any:
    """ShapeDtypeStructs of `tree` (arrays or abstract) with the given shardings."""
    return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                        tree, shardings)
