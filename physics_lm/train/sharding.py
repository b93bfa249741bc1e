"""The device mesh and the one place where logical axis names meet mesh axes.

Model code names logical axes only (`embed`, `mlp`, `heads`, `vocab`, `batch`, ...);
`LOGICAL_RULES` maps them to the mesh axes `data`, `fsdp`, `tensor`. A dimension that does not
divide evenly over its mesh axis is replicated instead (e.g. a 6-token CFG vocabulary), so any
mesh shape works for any model.
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

from physics_lm.config import ConfigError, MeshConfig

MESH_AXES = ("data", "fsdp", "tensor")
BATCH_AXES = ("data", "fsdp")

LOGICAL_RULES: tuple[tuple[str, str | tuple[str, ...] | None], ...] = (
    ("batch", BATCH_AXES),
    ("embed", "fsdp"),
    ("mlp", "tensor"),
    ("heads", "tensor"),
    ("vocab", "tensor"),
    ("kv", None),
    ("length", None),
    ("act_embed", None),
    ("norm", None),
)


def mesh_shape(mc: MeshConfig, num_devices: int) -> tuple[int, int, int]:
    """Resolves the -1 entry; the error names the mesh and the device count."""
    shape = [mc.data, mc.fsdp, mc.tensor]
    known = int(np.prod([s for s in shape if s != -1]))
    if -1 in shape:
        if num_devices % known:
            raise ConfigError(f"mesh=(data={mc.data}, fsdp={mc.fsdp}, tensor={mc.tensor}) does not "
                              f"divide the {num_devices} devices")
        shape[shape.index(-1)] = num_devices // known
    if int(np.prod(shape)) != num_devices:
        raise ConfigError(f"mesh=(data={mc.data}, fsdp={mc.fsdp}, tensor={mc.tensor}) needs "
                          f"{int(np.prod(shape))} devices, found {num_devices}")
    return tuple(shape)  # type: ignore[return-value]


def make_mesh(mc: MeshConfig, devices: Sequence[jax.Device] | None = None) -> Mesh:
    devices = list(devices if devices is not None else jax.devices())
    shape = mesh_shape(mc, len(devices))
    # Auto axes: the compiler propagates shardings from the constraints we place (pjit style).
    return jax.make_mesh(shape, MESH_AXES, axis_types=(AxisType.Auto,) * len(MESH_AXES),
                         devices=devices)


def _mesh_axes_for(names: Sequence[str | None], dims: Sequence[int], mesh: Mesh) -> PartitionSpec:
    rules = dict(LOGICAL_RULES)
    used: set[str] = set()
    out = []
    for name, dim in zip(names, dims, strict=True):
        axes = rules.get(name) if name else None
        axes_t = (axes,) if isinstance(axes, str) else tuple(axes or ())
        axes_t = tuple(a for a in axes_t if a not in used and mesh.shape[a] > 1)
        size = int(np.prod([mesh.shape[a] for a in axes_t])) if axes_t else 1
        if not axes_t or dim % size:
            out.append(None)
            continue
        used.update(axes_t)
        out.append(axes_t[0] if len(axes_t) == 1 else axes_t)
    return PartitionSpec(*out)


def tree_shardings(abstract_boxed, mesh: Mesh):
    """NamedShardings for a tree whose leaves may be `nn.LogicallyPartitioned` (else replicated)."""
    def one(leaf):
        if isinstance(leaf, nn.LogicallyPartitioned):
            spec = _mesh_axes_for(leaf.names, leaf.value.shape, mesh)
        else:
            spec = PartitionSpec()
        return NamedSharding(mesh, spec)
    return jax.tree.map(one, abstract_boxed,
                        is_leaf=lambda x: isinstance(x, nn.LogicallyPartitioned))


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Leading (batch) dimension split over the data-parallel axes."""
    return NamedSharding(mesh, PartitionSpec(BATCH_AXES))


def data_parallel_size(mesh: Mesh) -> int:
    return int(np.prod([mesh.shape[a] for a in BATCH_AXES]))


def activation_rules(mesh: Mesh) -> tuple[tuple[str, str | tuple[str, ...] | None], ...]:
    """Rules for `nn.with_logical_constraint` inside the model (axes of size 1 dropped)."""
    out = []
    for name, axes in LOGICAL_RULES:
        axes_t = (axes,) if isinstance(axes, str) else tuple(axes or ())
        axes_t = tuple(a for a in axes_t if mesh.shape[a] > 1)
        out.append((name, axes_t or None))
    return tuple(out)
