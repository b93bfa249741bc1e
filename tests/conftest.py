"""Shared pytest fixtures. Every test process sees 8 fake CPU devices (sharding tests)."""

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# Tests compile the same small programs many times (resume = same step twice): cache them.
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", "/tmp/physics_lm_test_jax_cache")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "-1")

from pathlib import Path

import pytest

_REFERENCE = Path(__file__).resolve().parents[1].parent / "shared" / "reference"


@pytest.fixture(scope="session")
def reference_dir() -> Path:
    """``/work/shared/reference`` (read-only corpora); skips only if the folder is absent."""
    if not _REFERENCE.is_dir():
        pytest.skip(f"reference folder {_REFERENCE} is absent")
    return _REFERENCE


@pytest.fixture(scope="session")
def load_config():
    """`load_config("quickstart", "steps=10")` -> configs/quickstart.py's get_config(arg)."""
    import importlib.util

    def load(stem: str, arg: str | None = None):
        path = Path(__file__).resolve().parents[1] / "configs" / f"{stem}.py"
        spec = importlib.util.spec_from_file_location(f"configs_{stem}", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module.get_config(arg)

    return load
