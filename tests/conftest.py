"""Shared pytest fixtures. Every test process sees 8 fake CPU devices (sharding tests).

Tests that compare with the official generators read `../shared/reference` (beside the repo).
Where it is absent they are skipped, with the reason in the summary (`-rs` in pytest.ini); under
CI (`CI` set) an absent folder is a failure: CI always has it.
"""

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# Tests compile the same small programs many times (resume = same step twice): cache them.
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", "/tmp/physics_lm_test_jax_cache")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "-1")

import importlib
import importlib.util
import json
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

_REFERENCE = Path(__file__).resolve().parents[1].parent / "shared" / "reference"


def _use_this_checkouts_configs() -> None:
    """`physics_lm.configs` is installed from configs/ of the checkout `pip install -e` ran in;
    a test of another checkout (a git worktree) must load *its* configs/, beside these tests."""
    configs = Path(__file__).resolve().parents[1] / "configs"
    spec = importlib.util.spec_from_file_location(
        "physics_lm.configs", configs / "__init__.py", submodule_search_locations=[str(configs)])
    module = importlib.util.module_from_spec(spec)
    sys.modules["physics_lm.configs"] = module
    spec.loader.exec_module(module)


_use_this_checkouts_configs()


@pytest.fixture(scope="session")
def reference_dir() -> Path:
    """``../shared/reference`` (read-only corpora): skip where absent, fail under CI."""
    if not _REFERENCE.is_dir():
        message = f"reference folder {_REFERENCE} is absent"
        if os.environ.get("CI", "").lower() not in ("", "0", "false"):
            pytest.fail(f"{message}, and CI must have it", pytrace=False)
        pytest.skip(message)
    return _REFERENCE


def read_jsonl(path: Path) -> Iterator[dict]:
    with path.open(encoding="utf-8") as f:
        yield from (json.loads(line) for line in f if line.strip())


@pytest.fixture(scope="session")
def reference_records(reference_dir):
    """`reference_records("cfg/samples_public")` -> the records of that reference JSONL file."""
    return lambda name: list(read_jsonl(reference_dir / f"{name}.jsonl"))


@pytest.fixture(scope="session")
def load_config():
    """`load_config("quickstart", "steps=10")` -> configs/quickstart.py's get_config(arg)."""
    return lambda stem, arg=None: importlib.import_module(
        f"physics_lm.configs.{stem}").get_config(arg)


@pytest.fixture(scope="session")
def igsm_smoke_run(load_config, tmp_path_factory):
    """`igsm_smoke_run(dest)`: copies a 4-step `configs/igsm.py:smoke` run (trained once per
    session) to `dest` and returns its config dict; analysis tests share the training."""
    import shutil

    from physics_lm.config import from_config_dict
    from physics_lm.train.trainer import train_and_evaluate

    def config():
        c = load_config("igsm", "smoke")
        c.train.update(num_steps=4, checkpoint_every=4)
        c.optim.warmup_steps = 1
        return c

    src = tmp_path_factory.mktemp("igsm_smoke_run")
    train_and_evaluate(from_config_dict(config()), src)

    def copy(dest: Path):
        shutil.copytree(src, dest, dirs_exist_ok=True)
        return config()

    return copy
