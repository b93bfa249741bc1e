"""The quick start learns, and the CLI fails cleanly on bad input."""

import math
import subprocess
import sys
from pathlib import Path

from physics_lm.config import from_config_dict
from physics_lm.train.trainer import train_and_evaluate

ROOT = Path(__file__).resolve().parents[1]


def test_shortened_quickstart_learns_the_grammar(tmp_path, load_config):
    c = load_config("quickstart", "steps=100")
    c.task.seq_len = c.model.max_len = 128  # same model and recipe, shorter rows
    c.train.batch_size = 16
    cfg = from_config_dict(c)
    out = train_and_evaluate(cfg, tmp_path)
    # Far below log(3) = 1.10, the loss of a model that only knows the three terminals.
    assert out["eval_loss"] < 0.85 * math.log(3), out


def test_cli_reports_bad_config_in_one_line(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "physics_lm.main", "--config=configs/cfg.py:smoke",
         "--config.model.num_heads=3", f"--workdir={tmp_path}"],
        cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    assert "model.num_heads=3" in proc.stderr
    assert "Traceback" not in proc.stderr
