"""Does the compiled train step fit the device? Checked after compiling, before the first step.

The compiled step's own memory analysis gives its bytes per device: arguments (the state) +
outputs + temporaries - outputs aliased to donated arguments (the new state reuses the old
one's buffers). The device's limit is `memory_stats()["bytes_limit"]` where the backend reports
it (GPU, TPU; the CPU reports none and the check is skipped), or `train.device_memory_bytes`.
A step that does not fit stops with one line naming what it needs, what the device has, and a
`optim.grad_accum` / mesh that would fit, instead of an allocator traceback mid-step.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import jax
from absl import logging

from physics_lm.config import ConfigError

GB = 1e9


def fmt_bytes(n: float) -> str:
    return f"{n / GB:.1f} GB" if abs(n) >= 0.1 * GB else f"{n / 1e6:.1f} MB"


class DoesNotFitError(ConfigError):
    """The train step needs more memory per device than the device has."""


@dataclasses.dataclass(frozen=True)
class StepMemory:
    """Bytes per device of one compiled executable (its `memory_analysis()`)."""

    argument: int
    output: int
    temp: int
    alias: int

    @property
    def peak(self) -> int:
        """Arguments + outputs + temporaries, counting donated-and-reused buffers once."""
        return self.argument + self.output + self.temp - self.alias

    def describe(self) -> str:
        return (f"{fmt_bytes(self.peak)} (arguments {fmt_bytes(self.argument)} + outputs "
                f"{fmt_bytes(self.output)} + temporaries {fmt_bytes(self.temp)} - aliased "
                f"{fmt_bytes(self.alias)})")


def step_memory(compiled: Any) -> StepMemory | None:
    """The compiled analysis, or None where the backend gives none."""
    try:
        ma = compiled.memory_analysis()
    except (NotImplementedError, jax.errors.JaxRuntimeError):
        return None
    if ma is None:
        return None
    return StepMemory(int(ma.argument_size_in_bytes), int(ma.output_size_in_bytes),
                      int(ma.temp_size_in_bytes), int(ma.alias_size_in_bytes))


def device_limit(devices: Sequence[jax.Device], override: int = 0) -> int | None:
    """`override` if > 0, else the smallest `bytes_limit` the devices report (None: unknown)."""
    if override > 0:
        return override
    limits = []
    for d in devices:
        try:
            stats = d.memory_stats()
        except (NotImplementedError, jax.errors.JaxRuntimeError):
            stats = None
        if stats and stats.get("bytes_limit"):
            limits.append(int(stats["bytes_limit"]))
    return min(limits) if limits else None


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def suggest(mem: StepMemory, grad_accum: int, batch_size: int, dp: int, limit: int,
            compile_at: Callable[[int], StepMemory | None] | None) -> str:
    """What would fit: the smallest `grad_accum` (per-device rows shrink, temporaries with
    them), fitted to the temporaries of this compile and of one at a larger grad_accum."""
    rows = lambda g: batch_size // (g * dp)  # rows per device per micro-batch
    options = [g for g in _divisors(batch_size) if g > grad_accum and rows(g) >= 1
               and (batch_size // g) % dp == 0]
    if not options:
        return (f"no larger optim.grad_accum is possible (batch {batch_size}, data*fsdp {dp}); "
                "shard the state with mesh.fsdp or use devices with more memory")
    probe = next((g for g in options if g >= 2 * grad_accum), options[-1])
    other = compile_at(probe) if compile_at is not None else None
    fixed = mem.peak - mem.temp  # the state: does not shrink with the micro-batch
    if other is not None:  # temp = temp0 + per_row * rows: two points
        per_row = (mem.temp - other.temp) / max(rows(grad_accum) - rows(probe), 1)
        base = mem.temp - per_row * rows(grad_accum)
        how = f"estimated from compiling grad_accum={grad_accum} and {probe}"
    else:  # one point: every temporary byte counted per row (optimistic)
        per_row, base = mem.temp / rows(grad_accum), 0.0
        how = f"estimated from grad_accum={grad_accum}'s temporaries per row"
    need = lambda g: fixed + base + per_row * rows(g)
    fits = [g for g in options if need(g) <= limit]
    if not fits:
        return (f"even optim.grad_accum={options[-1]} would need ~{fmt_bytes(need(options[-1]))} "
                f"({how}): shard the state (mesh.fsdp) or use more devices")
    g = fits[0]
    if g == probe and other is not None:
        est = f"needs {fmt_bytes(other.peak)} (compiled)"
    else:
        est = f"needs ~{fmt_bytes(need(g))} ({how})"
    devices = -(-dp * g // grad_accum)
    return (f"optim.grad_accum={g} {est}, or spread the batch over >= {devices} devices "
            f"(mesh data*fsdp) at grad_accum={grad_accum}")


def check_fits(compiled: Any, *, devices: Sequence[jax.Device], override: int, grad_accum: int,
               batch_size: int, dp: int,
               compile_at: Callable[[int], StepMemory | None] | None = None
               ) -> StepMemory | None:
    """Raises `DoesNotFitError` (one line) when the step cannot fit; returns its memory."""
    mem = step_memory(compiled)
    limit = device_limit(devices, override)
    if mem is None or limit is None:
        logging.debug("memory check skipped: analysis %s, device limit %s", mem, limit)
        return mem
    logging.info("train step memory per device: %s of %s", mem.describe(), fmt_bytes(limit))
    if mem.peak <= limit:
        return mem
    hint = suggest(mem, grad_accum, batch_size, dp, limit, compile_at)
    raise DoesNotFitError(
        f"the train step needs {mem.describe()} per device (compiled analysis, grad_accum="
        f"{grad_accum}, {batch_size // (grad_accum * dp)} rows per device) but the device has "
        f"{fmt_bytes(limit)}; {hint}")
