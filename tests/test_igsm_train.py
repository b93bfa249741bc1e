"""The iGSM smoke config trains through the normal trainer and learns its solution tokens."""

import json

from physics_lm.config import from_config_dict
from physics_lm.train.trainer import train_and_evaluate


def test_igsm_smoke_learns_solution_tokens(tmp_path, load_config):
    cfg = from_config_dict(load_config("igsm", "smoke"))
    out = train_and_evaluate(cfg, tmp_path)
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    first = next(r["loss"] for r in rows if "loss" in r)
    assert first > 5.0  # ~log(vocab): nothing known at step 1
    # Held-out = problems whose solution template is in the test bins (never trained on).
    assert out["eval_loss"] < 0.5 * first, (first, out)
