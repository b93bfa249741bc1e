"""`train.init_from`: a new run starts from another run's params; a different architecture is
refused naming what differs."""

import jax
import numpy as np
import pytest

from physics_lm.config import ConfigError, from_config_dict, parse_init_from
from physics_lm.train.init_from import start_from
from physics_lm.train.setup import build_experiment, fresh_state
from physics_lm.train.trainer import load_trained, train_and_evaluate


def _cfg(**overrides):
    c = {"seed": 1, "task": {"name": "cfg", "grammar": "cfg3b", "seq_len": 32},
         "model": {"num_layers": 2, "num_heads": 2, "d_model": 32, "max_len": 32},
         "optim": {"warmup_steps": 1, "lr": 3e-3},
         "train": {"batch_size": 8, "num_steps": 3, "log_every": 1, "eval_every": 100,
                   "eval_batches": 0, "checkpoint_every": 3}}
    for section, values in overrides.items():
        c[section] = {**c[section], **values}
    return from_config_dict(c)


def test_parse_init_from():
    assert parse_init_from("/runs/a") == (__import__("pathlib").Path("/runs/a"), None)
    assert parse_init_from("/runs/a:200") == (__import__("pathlib").Path("/runs/a"), 200)


def test_new_run_starts_from_the_source_params(tmp_path):
    src = tmp_path / "src"
    train_and_evaluate(_cfg(), src)
    _, saved, _ = load_trained(_cfg(), src)
    cfg = _cfg(optim={"lr": 1e-4}, train={"init_from": str(src), "num_steps": 2})
    exp = build_experiment(cfg)
    state = start_from(exp, fresh_state(exp), str(src))
    jax.tree.map(np.testing.assert_array_equal, jax.device_get(state.params),
                 jax.device_get(saved))
    assert int(state.step) == 0
    out = train_and_evaluate(cfg, tmp_path / "ft")  # trains from there: its own workdir
    assert out["step"] == 2
    fresh_loss = train_and_evaluate(_cfg(optim={"lr": 1e-4}, train={"num_steps": 2}),
                                    tmp_path / "scratch")["loss"]
    assert out["loss"] < fresh_loss  # the pretrained start is better than the random init


def test_different_architecture_is_refused(tmp_path):
    src = tmp_path / "src"
    train_and_evaluate(_cfg(), src)
    cfg = _cfg(model={"d_model": 64}, train={"init_from": f"{src}:3"})
    with pytest.raises(ConfigError, match=r"architectures differ.*shapes"):
        start_from(build_experiment(cfg), fresh_state(build_experiment(cfg)), f"{src}:3")
    with pytest.raises(ConfigError, match="no checkpoint of step 7"):
        start_from(build_experiment(_cfg()), fresh_state(build_experiment(_cfg())), f"{src}:7")
    with pytest.raises(ConfigError, match="no checkpoints in"):
        train_and_evaluate(_cfg(train={"init_from": str(tmp_path / "nowhere")}), tmp_path / "b")
