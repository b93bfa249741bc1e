"""`mesh.distributed=True`: join the other processes of a multi-process (multi-host) run.

On a TPU pod, under Slurm, Open MPI or GKE, `jax.distributed.initialize()` finds the coordinator,
the process count and this process's id by itself. Anywhere else (`launch/multihost.py` on one
machine, a hand-made cluster) the three come from the environment:

  JAX_COORDINATOR_ADDRESS  host:port of process 0's coordinator (JAX reads this one itself)
  JAX_NUM_PROCESSES        how many processes take part
  JAX_PROCESS_ID           this process's id, 0 .. JAX_NUM_PROCESSES-1

When all three are set, cluster auto-detection is switched off (a stray SLURM_* variable in a
laptop shell must not override them).
"""

from __future__ import annotations

import os

from physics_lm.config import ConfigError

ENV_NUM_PROCESSES = "JAX_NUM_PROCESSES"
ENV_PROCESS_ID = "JAX_PROCESS_ID"
ENV_COORDINATOR = "JAX_COORDINATOR_ADDRESS"


def _env_int(name: str) -> int | None:
    value = os.environ.get(name)
    if value is None or value == "":
        return None
    if not value.isdigit():
        raise ConfigError(f"mesh.distributed=True: {name}={value!r} must be a non-negative int")
    return int(value)


def initialize() -> None:
    """`jax.distributed.initialize` from the environment, else by cluster auto-detection.

    Must run before any JAX computation. Multi-process CPU runs need cross-process CPU
    collectives: gloo unless JAX_CPU_COLLECTIVES_IMPLEMENTATION says otherwise (on TPU/GPU this
    only concerns the host CPU backend).
    """
    import jax

    if "JAX_CPU_COLLECTIVES_IMPLEMENTATION" not in os.environ:
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    num, pid = _env_int(ENV_NUM_PROCESSES), _env_int(ENV_PROCESS_ID)
    explicit = None not in (num, pid, os.environ.get(ENV_COORDINATOR))
    if explicit and not pid < num:  # type: ignore[operator]
        raise ConfigError(f"mesh.distributed=True: {ENV_PROCESS_ID}={pid} must be < "
                          f"{ENV_NUM_PROCESSES}={num}")
    try:
        jax.distributed.initialize(
            num_processes=num, process_id=pid,
            cluster_detection_method="deactivate" if explicit else None)
    except ValueError as e:  # nothing to detect: say which variables would have told us
        raise ConfigError(f"mesh.distributed=True: {e} (no TPU pod, Slurm, MPI or GKE "
                          f"environment found; set {ENV_COORDINATOR}, {ENV_NUM_PROCESSES} and "
                          f"{ENV_PROCESS_ID}, or use launch/multihost.py)") from None


# Host-side agreement through the coordination service (process 0's key-value store), not device
# collectives: CPU collectives give up after a timeout, and hosts can legitimately be minutes
# apart (one compiles slower, process 0 reads a checkpoint alone).
_TIMEOUT_MS = 3600 * 1000
_uses: dict[str, int] = {}


def _client():
    from jax._src import distributed as jax_distributed  # JAX has no public host barrier

    return jax_distributed.global_state.client


def _unique(name: str) -> str:
    _uses[name] = _uses.get(name, 0) + 1
    return f"physics_lm/{name}/{_uses[name]}"


def barrier(name: str) -> None:
    """Every process waits here until all arrived (no-op in a single process)."""
    import jax

    if jax.process_count() > 1:
        _client().wait_at_barrier(_unique(name), _TIMEOUT_MS)


def from_process_0(name: str, value: str) -> str:
    """Process 0's `value` on every process (`value` is ignored elsewhere)."""
    import jax

    if jax.process_count() == 1:
        return value
    key = _unique(name)
    if jax.process_index() == 0:
        _client().key_value_set(key, value)
        return value
    return _client().blocking_key_value_get(key, _TIMEOUT_MS)
