"""A bad flag, override, config file or workdir is one line on stderr and exit code 2."""

import subprocess
import sys
from pathlib import Path

import pytest


def _run(*args: str, cwd) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "physics_lm.main", *args], cwd=cwd,
                          capture_output=True, text=True, check=False, timeout=300)


@pytest.mark.parametrize(("args", "needle"), [
    (("--config=configs/quickstart.py", "--config.model.nlayers=3"),
     "--config.model.nlayers: unknown config key 'nlayers' (did you mean 'num_layers'?)"),
    (("--config=configs/nope.py",), "--config=configs/nope.py: no such config file"),
    (("--config=configs/quickstart.py", "--config.mode=eval"), "has no config.json"),
    (("--config=configs/quickstart.py", "--config.eval.n_generate=0"), "eval.n_generate=0"),
    (("--config=configs/igsm.py:preset=easy",), "preset='easy'; known: med, hard"),
    (("--config=configs/quickstart.py", "--config.model.num_layers=abc"),
     "--config.model.num_layers=abc: invalid literal"),
    (("--config=configs/quickstart.py", "--compile_cache=/dev/null/cache"),
     "--compile_cache=/dev/null/cache: cannot use this folder (Not a directory)"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path, args, needle):
    root = Path(__file__).resolve().parents[1]
    out = _run(*args, f"--workdir={tmp_path / 'run'}", cwd=root)
    assert out.returncode == 2, out.stderr[-2000:]
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert lines and lines[-1].startswith("error: ") and needle in lines[-1], out.stderr[-2000:]
    assert "Traceback" not in out.stderr
