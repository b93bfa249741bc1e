"""Target topologies for the AOT fit check: Cloud TPU names -> compile-only devices + chip specs.

`v5p-32`, `v4-8`, `v5e-256`, `v6e-16` are Cloud TPU accelerator types: the number counts
TensorCores on v4/v5p (two per chip, one JAX device per chip: "megacore") and chips on v5e/v6e.
`v5e:2x2`, `v5p:2x2x4` name a slice shape (chips) directly. `cpu-N` is N fake CPU devices.
TPU devices come from `jax.experimental.topologies.get_topology_desc` (the TPU compiler of the
`libtpu` package; no TPU needed): they can be compiled for, never run on.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import math
import re

import jax

GiB = 2**30


@dataclasses.dataclass(frozen=True)
class Chip:
    """One TPU generation. HBM and dense bf16 peak per chip, from the source named."""

    generation: str  # the Cloud TPU name: v4, v5e, v5p, v6e
    device_kind: str  # what jax reports as `device.device_kind`
    hbm_bytes: int
    peak_bf16_flops: float
    cores_per_chip: int  # TensorCores; the accelerator-type number of v4/v5p counts them
    topology_prefix: str  # get_topology_desc's name for the generation
    torus_dims: int  # 3 (v4, v5p) or 2 (v5e, v6e)
    source: str


CHIPS: dict[str, Chip] = {c.generation: c for c in (
    Chip("v4", "TPU v4", 32 * GiB, 275e12, 2, "v4", 3, "https://cloud.google.com/tpu/docs/v4"),
    Chip("v5e", "TPU v5 lite", 16 * GiB, 197e12, 1, "v5e", 2,
         "https://cloud.google.com/tpu/docs/v5e"),
    Chip("v5p", "TPU v5", 95 * GiB, 459e12, 2, "v5", 3, "https://cloud.google.com/tpu/docs/v5p"),
    Chip("v6e", "TPU v6 lite", 32 * GiB, 918e12, 1, "v6e", 2,
         "https://cloud.google.com/tpu/docs/v6e"),
)}
ALIASES = {"v5litepod": "v5e", "v5": "v5p"}


class TopologyError(ValueError):
    """An unknown or malformed --topology; the message lists what is accepted."""


@dataclasses.dataclass(frozen=True)
class Target:
    name: str  # as the user wrote it
    description: str  # e.g. "v5p-32 = v5:2x2x4 (16 chips)"
    devices: list  # compile-only TPU devices, or CPU devices
    chip: Chip | None  # None for cpu-N


def slice_shape(chips: int, dims: int) -> tuple[int, ...]:
    """The standard slice shape of `chips` chips (a power of two): start from the smallest
    slice (2x2x1 / 1x1) and double the smallest side, as Cloud TPU slices grow."""
    if chips < 1 or chips & (chips - 1) or (dims == 3 and chips < 4):
        raise TopologyError(f"{chips} chips: name the slice shape instead (e.g. v5p:4x4x12)")
    shape = [2, 2, 1] if dims == 3 else [1, 1]
    while math.prod(shape) < chips:
        shape[shape.index(min(shape))] *= 2
        shape.sort()
    return tuple(shape)


def _usage() -> str:
    return ("expected cpu-N, an accelerator type (" + ", ".join(f"{g}-N" for g in CHIPS)
            + ", e.g. v5p-32) or a slice shape (e.g. v5e:2x2, v4:2x2x1)")


def parse(name: str) -> tuple[Chip, tuple[int, ...]]:
    """(chip, slice shape in chips) of a TPU topology name."""
    if m := re.fullmatch(r"(v\d+[a-z]*)-(\d+)", name):
        gen, count = ALIASES.get(m.group(1), m.group(1)), int(m.group(2))
        chip = CHIPS.get(gen)
        if chip is None:
            raise TopologyError(f"--topology={name}: unknown TPU generation {gen!r}; {_usage()}")
        if count % chip.cores_per_chip:
            raise TopologyError(f"--topology={name}: {gen} counts TensorCores, "
                                f"{chip.cores_per_chip} per chip")
        try:
            return chip, slice_shape(count // chip.cores_per_chip, chip.torus_dims)
        except TopologyError as e:
            raise TopologyError(f"--topology={name}: {e}") from None
    if m := re.fullmatch(r"(v\d+[a-z]*):(\d+(?:x\d+)*)", name):
        gen = ALIASES.get(m.group(1), m.group(1))
        chip = CHIPS.get(gen)
        shape = tuple(int(v) for v in m.group(2).split("x"))
        if chip is None or len(shape) != chip.torus_dims or min(shape) < 1:
            raise TopologyError(f"--topology={name}: {_usage()}")
        return chip, shape
    raise TopologyError(f"--topology={name}: {_usage()}")


def accelerator_type(chip: Chip, shape: tuple[int, ...]) -> str:
    """The Cloud TPU accelerator type of a slice (what TPU_ACCELERATOR_TYPE holds on a TPU VM)."""
    count = math.prod(shape) * chip.cores_per_chip
    return f"{'v5litepod' if chip.generation == 'v5e' else chip.generation}-{count}"


def resolve(name: str) -> Target:
    """The devices to compile for. cpu-N needs N CPU devices in this process (see `aot.main`)."""
    if m := re.fullmatch(r"cpu-(\d+)", name):
        n = int(m.group(1))
        devices = jax.devices("cpu")
        if len(devices) < n:
            raise TopologyError(f"--topology={name}: this process has {len(devices)} CPU devices "
                                f"(set XLA_FLAGS=--xla_force_host_platform_device_count={n})")
        return Target(name, f"{n} fake CPU devices", devices[:n], None)
    chip, shape = parse(name)
    from jax.experimental.topologies import get_topology_desc

    topo_name = f"{chip.topology_prefix}:{'x'.join(map(str, shape))}"
    kwargs: dict = {"chip_config_name": "megacore"} if chip.cores_per_chip > 1 else {}
    if min(shape[:2]) < 2:  # smaller than one 2x2 host (v5e-1, v5e-2): one host holds it all
        kwargs["chips_per_host_bounds"] = (*shape, 1)[:3]
    try:
        devices = get_topology_desc(topology_name=topo_name, platform="tpu", **kwargs).devices
    except (RuntimeError, ValueError) as e:  # no libtpu, or a shape it rejects
        hint = ("" if importlib.util.find_spec("libtpu") else
                "; the TPU compiler is the `tpu` extra: pip install -e '.[tpu]'")
        raise TopologyError(f"--topology={name} ({topo_name}): "
                            f"{str(e).splitlines()[0][:200]}{hint}") from None
    chips = len(devices)
    return Target(name, f"{name} = {topo_name} ({chips} chip{'s' * (chips > 1)} of "
                        f"{chip.generation}, one device per chip)", list(devices), chip)
