"""What every frozen-set builder shares: sized config names and byte-identical files.

Config names. A builder's variants are named `<base>` (the default size and seed 0, listed in
`BUILDER_CONFIGS`) or `<base>_n<N>_s<SEED>[.<split>+...]` (any size, eval seed and, for the
iGSM cells, a subset of the splits; `physics_lm.data.tfds.SetName`):
`tfds.builder("igsm_eval_cells/smoke_pq_n32_s0", data_dir=...)` works without listing every size,
because `get_builder_config` parses the name, and sets of different sizes live side by side.

Determinism. TFDS serialises each example as a `tf.train.Example`, whose features are a proto
map; protobuf writes map entries in hash order, which changes from process to process, so two
builds of the same examples give different bytes. `deterministic_serialization()` makes the
writer sort them (`SerializeToString(deterministic=True)`) for the duration of a build, and the
builders set `disable_shuffling`, so example i of a split is row i of the sampler's batch.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import inspect
from collections.abc import Iterator
from typing import Any

import tensorflow_datasets as tfds
from etils import epath
from tensorflow_datasets.core import example_serializer

from physics_lm.data.tfds import SetName, parse_config


@dataclasses.dataclass(eq=False)
class SetConfig(tfds.core.BuilderConfig):
    """A builder variant: `base` picks the task, `n` examples per split, `seed` the eval seed,
    `splits` a subset of the splits (empty = all)."""

    base: str = ""
    n: int = 4096
    seed: int = 0
    splits: tuple[str, ...] = ()


class SizedConfigs:
    """Mixin for a builder whose configs are parsed from their names (module docstring)."""

    DEFAULT_N: int = 4096

    @tfds.core.utils.classproperty
    @classmethod
    def code_path(cls) -> epath.Path:
        # TFDS's own lookup imports `importlib_resources` for a package module, which TFDS does
        # not install; the builder's file is all it needs (for checksums and metadata files).
        return epath.Path(inspect.getfile(cls))

    @classmethod
    def make_config(cls, base: str, n: int | None = None, seed: int = 0,
                    splits: tuple[str, ...] = ()) -> SetConfig:
        """The config of `base` at size `n` (None = DEFAULT_N), eval seed `seed`."""
        return _config(cls, SetName(base, n, seed, tuple(splits)))

    @classmethod
    def get_builder_config(cls, name: str, version: Any = None) -> SetConfig | None:
        parsed = parse_config(cls.name, name)
        return None if parsed is None else _config(cls, parsed)


def _config(cls: type, name: SetName) -> SetConfig:
    if name.n is None:
        name = dataclasses.replace(name, n=cls.DEFAULT_N)
    return _cached_config(cls, name)


@functools.cache
def _cached_config(cls: type, name: SetName) -> SetConfig:
    # One object per name: TFDS refuses a config that equals a listed one but is not it.
    return SetConfig(name=name.config(cls.DEFAULT_N), base=name.base, n=name.n, seed=name.seed,
                     splits=name.splits, description=f"{name.base}: {name.n} examples per "
                     f"split, eval seed {name.seed}")


class _SortedMapSerializer(example_serializer.ExampleSerializer):
    def serialize_example(self, example: Any) -> Any:
        return self.get_tf_example(example).SerializeToString(deterministic=True)


@contextlib.contextmanager
def deterministic_serialization() -> Iterator[None]:
    """Within the block TFDS writes examples with sorted proto maps (module docstring)."""
    saved = example_serializer.ExampleSerializer
    example_serializer.ExampleSerializer = _SortedMapSerializer
    try:
        yield
    finally:
        example_serializer.ExampleSerializer = saved


def prepare(builder: tfds.core.DatasetBuilder) -> None:
    """Writes the builder's files (array_record; no TensorFlow), deterministically."""
    with deterministic_serialization():
        builder.download_and_prepare(file_format="array_record")
