"""The iGSM smoke config trains through the normal trainer and learns its solution tokens."""

import importlib.util
import json
from pathlib import Path

from physics_lm.config import from_config_dict
from physics_lm.train.trainer import train_and_evaluate

ROOT = Path(__file__).resolve().parents[1]


def _config(arg: str):
    spec = importlib.util.spec_from_file_location("igsm_cfg", ROOT / "configs" / "igsm.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(arg)


def test_igsm_smoke_learns_solution_tokens(tmp_path):
    cfg = from_config_dict(_config("smoke"))
    out = train_and_evaluate(cfg, tmp_path)
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    first = next(r["loss"] for r in rows if "loss" in r)
    assert first > 5.0  # ~log(vocab): nothing known at step 1
    # Held-out = problems whose solution template is in the test bins (never trained on).
    assert out["eval_loss"] < 0.5 * first, (first, out)
