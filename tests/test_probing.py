"""Probes: recover a planted linear feature, stay at chance on shuffled labels, causal
multi-linear pooling, and an end-to-end `mode=probe` run that leaves the model untouched."""

import importlib.util
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import tiny_cfg_run

from physics_lm.analysis import run_analysis
from physics_lm.config import ConfigError
from physics_lm.probing import cfg_run, heads
from physics_lm.probing import train_probe as tp
from physics_lm.train.trainer import load_trained, train_and_evaluate

N, D, T = 2, 8, 16


def _synthetic() -> tp.ProbeProblem:
    """Activations with planted linear features, beside labels that are shuffled away from them.

    Groups: 0 = a 3-class label and 1 = a bit, each planted as a class-mean direction in the
    activations (x = noise + e0[y0] + e1[y1], orthogonal means); 2 and 3 = labels drawn the same
    way but independently of x (a shuffled pairing). The frozen "model" mixes x by a matrix M;
    layer 0 sees x @ M, layer 1 a deterministic non-linear scramble with no linear signal.
    """
    # Orthogonal class-mean directions (numpy: eager jax RNG compiles op by op, slow here).
    q_DxD, _ = np.linalg.qr(np.random.default_rng(7).normal(size=(D, D)))
    e0_3xD = jnp.asarray(5.0 * q_DxD[:, :3].T, jnp.float32)
    e1_2xD = jnp.asarray(5.0 * np.stack([q_DxD[:, 3], -q_DxD[:, 3]]), jnp.float32)

    def sample(key, B):
        k_x, k_y, k_shuffled, k_focus = jax.random.split(key, 4)
        y_BxTx2 = jax.random.randint(k_y, (B, T, 2), 0, jnp.array([3, 2]))
        z_BxTx2 = jax.random.randint(k_shuffled, (B, T, 2), 0, jnp.array([3, 2]))
        x_BxTxD = (jax.random.normal(k_x, (B, T, D)) + e0_3xD[y_BxTx2[..., 0]]
                   + e1_2xD[y_BxTx2[..., 1]])
        labels = jnp.concatenate([y_BxTx2, z_BxTx2], -1).astype(jnp.int32)
        return tp.ProbeBatch(x_BxTxD, labels, jax.random.bernoulli(k_focus, 0.5, (B, T, 4)))

    def features(feature_params, frozen, x_BxTxD):
        scramble = jnp.sin(37.0 * x_BxTxD[..., ::-1])  # carries no linear signal
        return jnp.stack([x_BxTxD @ frozen["m_DxD"], scramble])

    return tp.ProbeProblem(sample, features, (3, 2, 3, 2))


@pytest.fixture(scope="module")
def synthetic_fit():
    """One fit of every synthetic probe (compiles dominate on a loaded CPU: share them)."""
    m_DxD = 0.3 * np.random.default_rng(3).normal(size=(D, D)) + np.eye(D)  # a mixing map
    frozen = {"m_DxD": jnp.asarray(m_DxD, jnp.float32)}
    before = np.array(frozen["m_DxD"])
    problem = _synthetic()
    s = tp.FitSettings(steps=600, batch_size=32, lr=1e-2, warmup_steps=10, eval_batches=4,
                       kinds=("linear", "multi"), num_heads=2, rank=4, max_offset=4,
                       log_every=100, remat=False)  # vmapped layers: a quicker compile
    tx, train, ev = tp.jit_steps(problem, s)
    state = tp.init_probe_state(problem, tx, s, N, D)
    state, last = tp.fit(train, state, frozen, s)
    np.testing.assert_array_equal(np.asarray(frozen["m_DxD"]), before)  # frozen input untouched
    assert np.isfinite(last["loss"])
    return tp.evaluate(ev, state, frozen, s.eval_batches)


def test_probe_recovers_planted_linear_feature(synthetic_fit):
    out = synthetic_fit
    lin, multi = out["linear"]["acc"], out["multi"]["acc"]
    assert lin[0, :2].min() > 0.97, lin  # layer 0 carries both planted features
    assert multi[0, :2].min() > 0.9, multi  # the pooling learns to keep its own position
    assert out["linear"]["acc_focus"][0, :2].min() > 0.95
    majority = out["baseline"]["majority"]
    assert np.all(lin[1, :2] < majority[:2] + 0.1), lin  # the scrambled layer has no signal


def test_probe_stays_at_chance_on_shuffled_labels(synthetic_fit):
    out = synthetic_fit
    majority = out["baseline"]["majority"][2:]
    np.testing.assert_allclose(majority, [1 / 3, 1 / 2], atol=0.06)  # not degenerate labels
    for kind in ("linear", "multi"):
        acc = out[kind]["acc"][:, 2:]
        assert np.all(acc <= majority[None] + 0.05), (kind, acc, majority)


def test_multi_linear_probe_is_causal():
    G, C = 2, 3
    init = jax.jit(heads.init_multi, static_argnums=(1, 2, 3, 4),
                   static_argnames=("num_heads", "rank", "max_offset"))
    p = init(jax.random.key(0), N, D, G, C, num_heads=2, rank=4, max_offset=4)
    rng = np.random.default_rng(0)
    p = {**p, "pos_NxGxHxO": jnp.asarray(rng.normal(size=p["pos_NxGxHxO"].shape), jnp.float32)}
    mask = heads.class_mask((3, 2))
    x = rng.normal(size=(N, 2, T, D)).astype(np.float32)
    i = 9
    y = x.copy()
    y[:, :, i + 1:] = rng.normal(size=(N, 2, T - i - 1, D))
    apply = jax.jit(heads.apply_multi, static_argnames="remat")  # one compile, not op by op
    a, b = np.asarray(apply(p, x, mask)), np.asarray(apply(p, y, mask))
    np.testing.assert_allclose(apply(p, x, mask, remat=False), a, atol=1e-5)
    np.testing.assert_allclose(a[:, :, :i + 1], b[:, :, :i + 1], atol=1e-6)
    assert not np.allclose(a[:, :, i + 1:], b[:, :, i + 1:])  # the future does reach later ones
    w = np.asarray(jax.jit(heads.pooling_weights, static_argnums=1)(p["pos_NxGxHxO"][0], T))
    np.testing.assert_allclose(w.sum(-1), 1.0, atol=1e-5)
    assert np.abs(np.triu(w, 1)).max() == 0.0
    assert a[..., 1, 2].max() < -1e8  # group 1 has 2 classes: the third is masked


def test_probe_checkpoint_end_to_end(tmp_path, monkeypatch):
    train_and_evaluate(tiny_cfg_run(), tmp_path)
    # Linear only: the multi-linear heads are covered above, and their compile on the real
    # model would double this test's time on a loaded CPU.
    probe = {"steps": 3, "batch_size": 8, "eval_batches": 1, "kinds": ["linear"],
             "warmup_steps": 1, "log_every": 1}
    cfg = tiny_cfg_run(mode="probe", probe=probe)
    _, saved, _ = load_trained(cfg, tmp_path)
    saved = jax.tree.map(np.asarray, saved)
    seen = []
    original = cfg_run.probe_model

    def checked(problem, steps, frozen, *args):  # the frozen params survive probe training
        snap = jax.tree.map(np.array, frozen)
        out = original(problem, steps, frozen, *args)
        jax.tree.map(np.testing.assert_array_equal, jax.tree.map(np.asarray, frozen), snap)
        seen.append(snap)
        return out

    monkeypatch.setattr(cfg_run, "probe_model", checked)
    result = run_analysis(cfg, tmp_path)
    jax.tree.map(np.testing.assert_array_equal, seen[0], saved)  # trained = the checkpoint
    differs = jax.tree.map(lambda a, b: not np.array_equal(a, b), seen[0], seen[1])
    assert any(jax.tree.leaves(differs))  # the control really is another (random-init) model

    doc = json.loads((tmp_path / "probe" / "cfg.json").read_text())
    assert result["checkpoint_step"] == result["step"] == doc["checkpoint_step"] == 2
    layers = ["embed", "blocks.0.resid_post", "blocks.1.resid_post", "final"]
    assert doc["layers"] == layers and doc["levels"] == [1, 2, 3, 4, 5]
    assert list(doc["results"]) == ["linear"]
    for kind in ("linear",):
        for layer in layers:
            for level in doc["levels"]:
                for target in ("ancestor", "boundary"):
                    e = doc["results"][kind][layer][f"level{level}"][target]
                    for model in ("trained", "control"):
                        assert 0.0 <= e[model]["acc"] <= 1.0, (kind, layer, level, target, e)
                    assert e["n"] > 0 and e["majority"] is not None
                    # 64-token rows hold no whole level-1 span (cfg3b strings are >= 138
                    # tokens): no NT ends there, so those accuracies are null, not 0.
                    if e["n_boundary"] == 0:
                        assert e["trained"]["acc_boundary"] is None
                    elif level >= 3:
                        assert e["n_boundary"] > 0
        grid = doc["heatmap"][kind]["ancestor_acc_boundary"]["control"]
        assert np.array(grid).shape == (5, 4)
    if importlib.util.find_spec("matplotlib") is not None:  # else it logs a note and skips
        assert (tmp_path / "probe" / "heatmap.png").stat().st_size > 0


def test_probe_config_errors_name_the_key():
    with pytest.raises(ConfigError, match=r"probe\.stepz"):
        tiny_cfg_run(probe={"stepz": 3})
    with pytest.raises(ConfigError, match=r"probe\.kinds"):
        tiny_cfg_run(probe={"kinds": ["cubic"]})
    with pytest.raises(ConfigError, match=r"probe\.lr"):
        tiny_cfg_run(probe={"lr": "fast"})
    with pytest.raises(ConfigError, match=r"probe\.layers='some'"):
        tiny_cfg_run(probe={"layers": "some"})
    settings = tiny_cfg_run(probe={"steps": 5, "lr": 1, "layers": ["final"]}).probe
    fit = settings.fit(seed=4)
    assert (fit.steps, fit.lr, fit.seed, settings.layers) == (5, 1.0, 4, ("final",))
