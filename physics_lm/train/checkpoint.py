"""Orbax checkpoints of the train state: the only module that talks to orbax.

Orbax writes each step into a temporary directory and renames it when complete, so a crash
mid-save never leaves a half-written "latest" checkpoint. Files can still be damaged afterwards
(a truncated copy, a disk error, a half-synced bucket): `restore_latest` sets such a checkpoint
aside as `checkpoints/<step>.damaged` with a warning and restores the one before it, so a relaunch
(or a babysitter) never dies on the same checkpoint twice. In a multi-process run all processes
restore the same step: process 0 reads the candidate on its own and broadcasts the verdict
(through the coordination service) before the collective restore, which cannot be abandoned
half-way by one process alone.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from absl import logging

from physics_lm.train import distributed

DAMAGED_SUFFIX = ".damaged"


class Checkpointer:
    """Periodic, keep-N checkpoints under `workdir/checkpoints`, restored with given shardings."""

    def __init__(self, workdir: str | Path, *, every: int, keep: int) -> None:
        self.every = every
        self.directory = Path(workdir).absolute() / "checkpoints"
        options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True,
                                               enable_async_checkpointing=True)
        self._mgr = ocp.CheckpointManager(self.directory, options=options)

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

    def restore_latest(self, abstract_state: Any) -> tuple[int | None, Any]:
        """(step, state) of the newest checkpoint that restores, or (None, None) if none does.

        Unreadable checkpoints on the way are set aside (renamed, with a warning). A restore
        that fails although every file reads (a sharding or code bug, not damage) is raised.
        """
        while (step := self.latest_step()) is not None:
            if jax.process_count() > 1:
                mine = (self.unreadable(step) or "") if jax.process_index() == 0 else ""
                why = distributed.from_process_0(f"checkpoint {step} verdict", mine) or None
                if why is None:
                    return step, self.restore(step, abstract_state)
            else:
                try:
                    return step, self.restore(step, abstract_state)
                except Exception:
                    why = self.unreadable(step)
                    if why is None:
                        raise
            self._set_aside(step, why)
        return None, None

    def unreadable(self, step: int) -> str | None:
        """Why the files of `step` cannot be read back (None: every array reads).

        A host-only read by this process alone (numpy, no shardings, no barriers).
        """
        me = jax.process_index()
        mp = ocp.options.MultiprocessingOptions(primary_host=me, active_processes={me})
        reader = ocp.Checkpointer(ocp.PyTreeCheckpointHandler(multiprocessing_options=mp),
                                  multiprocessing_options=mp)
        path = self.directory / str(step) / "default"
        try:
            tree = reader.metadata(path).item_metadata.tree
            args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), tree)
            reader.restore(path, args=ocp.args.PyTreeRestore(restore_args=args))
        except Exception as e:  # tensorstore, orbax and OS errors all mean "damaged" here
            first = (str(e).strip().splitlines() or [""])[0]
            return f"{type(e).__name__}: {first[:200]}"
        finally:
            reader.close()
        return None

    def _set_aside(self, step: int, why: str) -> None:
        src = self.directory / str(step)
        dest = src.with_name(f"{step}{DAMAGED_SUFFIX}")
        n = 1
        while dest.exists():
            n += 1
            dest = src.with_name(f"{step}{DAMAGED_SUFFIX}{n}")
        if jax.process_index() == 0:
            src.rename(dest)
        distributed.barrier(f"set aside checkpoint {step}")  # all list the directory after it
        logging.warning("checkpoint %s does not restore (%s): set aside as %s; trying the "
                        "previous one", src, why, dest)
        self._mgr.reload()

    def wait(self) -> None:
        self._mgr.wait_until_finished()

    def close(self) -> None:
        self._mgr.wait_until_finished()
        self._mgr.close()


def abstract_like(tree: Any, shardings: Any) -> Any:
    """ShapeDtypeStructs of `tree` (arrays or abstract) with the given shardings."""
    return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                        tree, shardings)
