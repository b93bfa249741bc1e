"""The persistent compilation cache: which folder wins, bad folders, and a second run that hits."""

import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import pytest

from physics_lm import compile_cache
from physics_lm.config import ConfigError

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def jax_cache_config():
    """The process's JAX cache settings, restored after a test that changes them."""
    keys = ("jax_compilation_cache_dir", "jax_enable_compilation_cache")
    saved = {k: jax.config.values[k] for k in keys}
    yield
    for k, v in saved.items():
        jax.config.update(k, v)


def test_the_folder_given_wins_then_the_environment_then_the_default(
        tmp_path, monkeypatch, jax_cache_config):
    monkeypatch.setenv(compile_cache.ENV, str(tmp_path / "env"))
    assert compile_cache.enable(str(tmp_path / "default")) == tmp_path / "env"
    assert not (tmp_path / "default").exists()
    assert compile_cache.enable(str(tmp_path / "mine"), explicit=True) == tmp_path / "mine"
    assert jax.config.values["jax_compilation_cache_dir"] == str(tmp_path / "mine")
    monkeypatch.delenv(compile_cache.ENV)
    assert compile_cache.enable(str(tmp_path / "default")) == tmp_path / "default"
    assert (tmp_path / "default").is_dir()
    assert jax.config.values["jax_compilation_cache_dir"] == str(tmp_path / "default")
    assert compile_cache.enable("gs://bucket/cache", explicit=True) is None  # JAX opens it
    assert jax.config.values["jax_compilation_cache_dir"] == "gs://bucket/cache"
    assert not Path("gs:").exists()
    monkeypatch.setenv(compile_cache.ENV, str(tmp_path / "env"))
    assert compile_cache.enable("", explicit=True) is None  # "" = none, even over the env
    assert jax.config.values["jax_enable_compilation_cache"] is False


def test_a_folder_that_cannot_be_made_is_an_error_only_when_given(
        tmp_path, monkeypatch, jax_cache_config, caplog):
    monkeypatch.delenv(compile_cache.ENV, raising=False)
    (tmp_path / "file").write_text("x")
    bad = str(tmp_path / "file" / "cache")
    before = jax.config.values["jax_compilation_cache_dir"]
    with pytest.raises(ConfigError, match=r"--compile_cache=.*file/cache: cannot use this folder"):
        compile_cache.enable(bad, explicit=True)
    assert compile_cache.enable(bad) is None  # the default: a warning, and the run goes on
    assert "compilation cache off" in caplog.text
    assert jax.config.values["jax_compilation_cache_dir"] == before


def _sample(cache: Path, out: Path, *extra: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != compile_cache.ENV}
    return subprocess.run(
        [sys.executable, "-m", "physics_lm.data.igsm", "sample", "--preset", "custom",
         "--max_op", "3", "--max_edge", "6", "--n", "4", "--seed", "3", "--out", str(out),
         "--compile_cache", str(cache), *extra],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


def test_a_second_run_compiles_nothing_new_and_writes_the_same_lines(tmp_path):
    cache = tmp_path / "cache"
    first = _sample(cache, tmp_path / "a.jsonl")
    assert first.returncode == 0, first.stderr[-2000:]
    entries = sorted(p.name for p in cache.iterdir() if p.name.endswith("-cache"))
    assert any(name.startswith("jit_") for name in entries)  # the sampler, compiled and kept
    second = _sample(cache, tmp_path / "b.jsonl")
    assert second.returncode == 0, second.stderr[-2000:]
    assert sorted(p.name for p in cache.iterdir() if p.name.endswith("-cache")) == entries
    a, b = ((tmp_path / n).read_text().splitlines() for n in ("a.jsonl", "b.jsonl"))
    assert len(a) == 4 and [json.loads(x) for x in a] == [json.loads(x) for x in b]


def test_a_bad_folder_on_the_command_line_is_one_line_and_exit_2(tmp_path):
    (tmp_path / "file").write_text("x")
    out = _sample(tmp_path / "file" / "cache", tmp_path / "a.jsonl")
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "--compile_cache=" in out.stderr and "cannot use this folder" in out.stderr
