"""LoRA training runs (`train.lora_rank` on `train.init_from`): step 0 is the base model; only the
adapters are trained, optimised and saved; the base checkpoint stays bit-identical; resume and
the analysis loader rebuild the merged params from the `lora_base.json` pointer."""

import json

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from physics_lm.config import ConfigError, from_config_dict
from physics_lm.models import lora
from physics_lm.train import lora_base
from physics_lm.train.checkpoint import Checkpointer
from physics_lm.train.init_from import start_from
from physics_lm.train.setup import build_experiment, fresh_state
from physics_lm.train.trainer import jit_steps, load_trained, train_and_evaluate
from tests.conftest import read_jsonl


def _cfg(**overrides):
    c = {"seed": 1, "task": {"name": "cfg", "grammar": "cfg3b", "seq_len": 32},
         "model": {"num_layers": 2, "num_heads": 2, "d_model": 32, "max_len": 32},
         "optim": {"warmup_steps": 0, "lr": 3e-3, "weight_decay": 0.05},
         "train": {"batch_size": 8, "num_steps": 3, "log_every": 1, "eval_every": 100,
                   "eval_batches": 0, "checkpoint_every": 3}}
    for section, values in overrides.items():
        c[section] = {**c[section], **values}
    return from_config_dict(c)


def _lora(src, **train):
    return _cfg(optim={"lr": 1e-2}, train={"init_from": str(src), "lora_rank": 2,
                                           "num_steps": 6, **train})


@pytest.fixture(scope="module")
def base_run(tmp_path_factory):
    src = tmp_path_factory.mktemp("base")
    train_and_evaluate(_cfg(), src)
    return src, jax.tree.map(np.asarray, load_trained(_cfg(), src)[1])


def test_config():
    assert _cfg(train={"init_from": "/b", "lora_rank": 4}).train.lora_ranks == (4, 8)
    assert _cfg(train={"init_from": "/b", "lora_rank": 4, "lora_embed_rank": 0}
                ).train.lora_ranks == (4, 0)
    assert _cfg().train.lora_ranks is None
    with pytest.raises(ConfigError, match=r"train.lora_rank=4: LoRA needs the base run"):
        _cfg(train={"lora_rank": 4})
    with pytest.raises(ConfigError, match=r"train.lora_embed_rank=-2"):
        _cfg(train={"init_from": "/b", "lora_rank": 4, "lora_embed_rank": -2})


def test_step0_is_the_base_model_and_only_adapters_are_optimised(base_run, tmp_path):
    src, _ = base_run
    exp = build_experiment(_lora(src))
    state = fresh_state(exp)
    base = lora_base.load(exp, tmp_path, first_launch=True)
    with jax.set_mesh(exp.mesh):
        _, m = jit_steps(exp)[0](state, base)
    full = build_experiment(_cfg(train={"init_from": str(src)}))
    with jax.set_mesh(full.mesh):
        _, m_full = jit_steps(full)[0](start_from(full, fresh_state(full), str(src)))
    np.testing.assert_allclose(float(m["loss"]), float(m_full["loss"]), rtol=1e-6)
    adapter_shapes = {x.shape for x in jax.tree.leaves(state.params)}
    assert adapter_shapes == {(exp.model.cfg.vocab_size, 4), (4, 32), (32, 2), (2, 2, 16)}
    moments = [x.shape for x in jax.tree.leaves(state.opt_state) if x.ndim]
    assert moments and set(moments) <= adapter_shapes  # no base-shaped optimizer state
    assert json.loads((tmp_path / "lora_base.json").read_text())["step"] == 3


def test_lora_run_trains_saves_adapters_and_resumes(base_run, tmp_path):
    src, before = base_run
    out = train_and_evaluate(_lora(src), tmp_path / "a")
    losses = [r["loss"] for r in read_jsonl(tmp_path / "a" / "metrics.jsonl") if "loss" in r]
    assert out["step"] == 6 and losses[-1] < losses[0] - 0.1, losses  # it learned something
    # The base checkpoint, read again, is bit-identical.
    jax.tree.map(np.testing.assert_array_equal,
                 jax.tree.map(np.asarray, load_trained(_cfg(), src)[1]), before)
    # The checkpoint holds the adapters only.
    mgr = ocp.CheckpointManager((tmp_path / "a" / "checkpoints").absolute(),
                                item_handlers=ocp.PyTreeCheckpointHandler())
    saved = {tuple(x.shape) for x in jax.tree.leaves(mgr.item_metadata(6)["params"])}
    mgr.close()
    assert (32, 2) in saved and (32, 3, 2, 16) not in saved
    # The analysis loader returns the merged params: base + the saved adapters.
    exp, merged, step = load_trained(_lora(src), tmp_path / "a")
    ckpt = Checkpointer(tmp_path / "a", every=1, keep=1)
    adapters = ckpt.restore(6, exp.abstract_state).params
    ckpt.close()
    jax.tree.map(np.testing.assert_array_equal, jax.device_get(merged),
                 jax.device_get(jax.jit(lora.merge)(before, jax.device_get(adapters))))
    assert step == 6 and not np.allclose(merged["wte"]["embedding"], before["wte"]["embedding"])
    # Stopped at step 2 and relaunched: the same adapters as the uninterrupted run.
    train_and_evaluate(_lora(src), tmp_path / "b", stop_at_step=2)
    train_and_evaluate(_lora(src), tmp_path / "b")
    jax.tree.map(np.testing.assert_array_equal, jax.device_get(load_trained(
        _lora(src), tmp_path / "b")[1]), jax.device_get(merged))


def test_wrong_or_changed_base_is_refused(base_run, tmp_path):
    src, _ = base_run
    with pytest.raises(ConfigError, match="architectures differ"):
        train_and_evaluate(_cfg(model={"d_model": 64}, train={
            "init_from": str(src), "lora_rank": 2}), tmp_path / "w")
    train_and_evaluate(_lora(src, num_steps=1, checkpoint_every=1), tmp_path / "c")
    pointer = tmp_path / "c" / "lora_base.json"
    doc = json.loads(pointer.read_text())
    pointer.write_text(json.dumps({**doc, "fingerprint": doc["fingerprint"] * 1.01}))
    with pytest.raises(ConfigError, match="changed since the adapters were trained"):
        load_trained(_lora(src, num_steps=1, checkpoint_every=1), tmp_path / "c")


def test_common_config_holds_the_lora_keys():
    """The CLI can only override keys the config file holds (`--config.train.lora_rank=4`)."""
    import dataclasses
    import importlib.util
    from pathlib import Path

    from physics_lm.config import TrainConfig

    path = Path(__file__).resolve().parents[1] / "configs" / "common.py"
    spec = importlib.util.spec_from_file_location("common_here", path)
    common = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(common)
    train = common.get_config("cfg").train
    assert set(train) == {f.name for f in dataclasses.fields(TrainConfig)}
    assert from_config_dict(common.get_config("cfg")).train.lora_ranks is None
