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


def _wsd(num_steps: int, **train):
    return _cfg(optim={"schedule": "wsd", "warmup_steps": 2, "decay_frac": 0.5},
                train={"num_steps": num_steps, "checkpoint_every": 2, "keep_checkpoints": 10,
                       **train})


def test_wsd_schedule_is_the_same_for_a_longer_run_until_its_decay():
    from physics_lm.train.optim import lr_schedule, wsd_decay_start

    short, long = (_wsd(n).optim for n in (12, 40))
    f12, f40 = lr_schedule(short, 12), lr_schedule(long, 40)
    assert wsd_decay_start(short, 12) == 6 and wsd_decay_start(long, 40) == 20
    np.testing.assert_allclose([float(f12(s)) for s in range(13)],
                               [0, 1.5e-3, *[3e-3] * 5, 2.5e-3, 2e-3, 1.5e-3, 1e-3, 5e-4, 0],
                               atol=1e-9)
    assert [float(f40(s)) for s in range(7)] == [float(f12(s)) for s in range(7)]
    assert len({float(f40(s)) for s in range(2, 21)}) == 1 and float(f40(40)) == 0.0
    with pytest.raises(ConfigError, match=r"optim\.decay_frac=0\.9"):
        _cfg(optim={"schedule": "wsd", "warmup_steps": 2, "decay_frac": 0.9})


def test_init_from_state_extends_a_wsd_run_exactly(tmp_path):
    """A fork of a wsd run's stable-phase checkpoint with the whole train state continues the
    source step for step (same data, moments and lr) until the source's decay; under another
    schedule it does not."""
    src = tmp_path / "src"
    train_and_evaluate(_wsd(12), src)  # stable until step 6; checkpoints 2, 4, ..., 12
    _, at6, _ = load_trained(_wsd(12), src, step=6)
    spec = f"{src}:4"
    ext = _wsd(40, init_from=spec, init_from_state=True)
    out = train_and_evaluate(ext, tmp_path / "ext", stop_at_step=6)
    assert out["step"] == 6
    _, got, step = load_trained(ext, tmp_path / "ext")
    assert step == 6 and sorted(p.name for p in (tmp_path / "ext/checkpoints").iterdir()) == ["6"]
    jax.tree.map(np.testing.assert_array_equal, jax.device_get(got), jax.device_get(at6))
    cosine = _cfg(optim={"schedule": "cosine", "warmup_steps": 2},  # same state, another lr
                  train={"num_steps": 40, "checkpoint_every": 2, "init_from": spec,
                         "init_from_state": True})
    train_and_evaluate(cosine, tmp_path / "cos", stop_at_step=6)
    _, other, _ = load_trained(cosine, tmp_path / "cos")
    diff = jax.tree.map(lambda a, b: float(np.abs(a - b).max()), jax.device_get(other),
                        jax.device_get(at6))
    assert max(jax.tree.leaves(diff)) > 0
    # refused: a source at or past this run's end; another optimizer chain; without init_from
    with pytest.raises(ConfigError, match="source is at step 12, not before"):
        train_and_evaluate(_wsd(12, init_from=str(src), init_from_state=True), tmp_path / "x")
    clip0 = _cfg(optim={"schedule": "wsd", "warmup_steps": 2, "decay_frac": 0.5,
                        "grad_clip": 0.0},
                 train={"num_steps": 40, "init_from": spec, "init_from_state": True})
    with pytest.raises(ConfigError, match="optimizer states differ"):
        train_and_evaluate(clip0, tmp_path / "y")
    with pytest.raises(ConfigError, match=r"train\.init_from_state=True: needs train\.init_from"):
        _cfg(train={"init_from_state": True})
