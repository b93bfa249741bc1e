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
    # The share of rows trained on (valid, within seq_len) is logged with every train row.
    shares = [r["rows_trained"] for r in rows if "loss" in r]
    assert shares and all(0.8 <= s <= 1.0 for s in shares), shares
    assert all(r["rows_overflow"] + r["rows_trained"] <= 1.0 for r in rows if "loss" in r)


def test_eval_loss_is_measured_on_the_test_template_bins(load_config, monkeypatch):
    """Every row the trainer's eval step samples has its solution template in a test bin."""
    import jax
    import numpy as np

    from physics_lm.train import trainer
    from physics_lm.train.setup import build_experiment
    from physics_lm.train.steps import STREAM_EVAL_DATA, stream_key

    exp = build_experiment(from_config_dict(load_config("igsm", "smoke")))
    seen = []
    real = trainer.make_eval_step
    monkeypatch.setattr(trainer, "make_eval_step",
                        lambda model, task, **kw: seen.append(task) or real(model, task, **kw))
    trainer.jit_steps(exp)
    (task,) = seen
    key = jax.random.fold_in(stream_key(exp.cfg.seed, STREAM_EVAL_DATA), 0)
    batch = jax.jit(lambda k: task.sample(k, 32))(key)
    bins = np.asarray(batch.labels["template_bin"])[np.asarray(batch.labels["valid"]) == 1]
    train_bins = set(exp.task.train_bins)
    assert len(bins) >= 16 and not train_bins & set(bins.tolist()), sorted(set(bins.tolist()))
