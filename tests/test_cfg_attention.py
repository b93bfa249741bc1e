"""Attention statistics (eval/cfg_attention.py) on hand-built patterns, and mode=attention."""

import importlib.util
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import tiny_cfg_run

from physics_lm.analysis import run_analysis
from physics_lm.config import ConfigError, build_section
from physics_lm.data.cfg.task import CFGTask
from physics_lm.eval import cfg_attention as ca
from physics_lm.eval.cfg_attention_run import AttentionSettings
from physics_lm.train.trainer import train_and_evaluate

LEVELS, RANKS, H = (1, 2, 3, 4, 5), 2, 2


@pytest.fixture(scope="module")
def rows():
    """3 packed cfg3f rows of 160 tokens, (nt_boundary [B,T,D], string_id [B,T]), the first
    batch in which a second string starts early enough to have NT ends of its own (its first
    tokens must not count the previous string's ends)."""
    for seed in range(50):
        batch = jax.device_get(CFGTask("cfg3f", seq_len=160).sample(jax.random.key(seed), 3))
        bnd, sid = (np.asarray(batch.labels[k]) for k in ("nt_boundary", "string_id"))
        if ((sid == 1) & (bnd[..., 3] == 1)).any():
            return bnd, sid
    raise AssertionError("no cfg3f row of 160 tokens with two strings in 50 batches")


def _stats(A_BxHxTxT: np.ndarray, bnd: np.ndarray, sid: np.ndarray) -> dict:
    sums = jax.device_get(ca.batch_sums([jnp.asarray(A_BxHxTxT, jnp.float32)], bnd, sid,
                                        LEVELS, RANKS))
    return ca.finalize({k: np.asarray(v, np.float64) for k, v in sums.items()})


def _prev_end(bnd, sid, b, i, level):
    """Loop definition: the last NT end at `level` before i, in i's string (-1 if none)."""
    for j in range(i - 1, -1, -1):
        if bnd[b, j, level] == 1:
            return j if sid[b, j] == sid[b, i] else -1
    return -1


def _reference(A, bnd, sid):
    """The statistics of the module docstring, written as plain loops over (b, i)."""
    T = A.shape[2]
    tok = bnd[..., 0] >= 0
    num, cnt = np.zeros((H, T)), np.zeros(T)
    for b, i in zip(*np.nonzero(tok), strict=True):
        num[:, : i + 1] += A[b, :, i, i::-1]
        cnt[: i + 1] += 1
    bias = num / np.maximum(cnt, 1)
    Q, K = len(LEVELS) + 1, len(LEVELS)
    tgt = [[[[] for _ in range(RANKS)] for _ in range(K)] for _ in range(Q)]
    other = [[[] for _ in range(K)] for _ in range(Q)]
    for b, i in zip(*np.nonzero(tok), strict=True):
        keys = [j for j in range(i + 1) if tok[b, j] and sid[b, j] == sid[b, i]]
        for k, level in enumerate(LEVELS):
            ends = [_prev_end(bnd, sid, b, i, level)]
            for _ in range(RANKS - 1):
                ends.append(_prev_end(bnd, sid, b, ends[-1], level) if ends[-1] >= 0 else -1)
            if ends[0] < 0:
                continue
            for q in range(Q):
                if q < K and bnd[b, i, LEVELS[q]] != 1:
                    continue
                for r, j in enumerate(ends):
                    if j >= 0:
                        tgt[q][k][r].append(A[b, :, i, j] - bias[:, i - j])
                other[q][k] += [A[b, :, i, j] - bias[:, i - j] for j in keys if j != ends[0]]
    mean = lambda xs: np.mean(xs, axis=0) if xs else np.full(H, np.nan)
    return (np.array([[[mean(x) for x in by_r] for by_r in by_k] for by_k in tgt]),
            np.array([[mean(x) for x in by_k] for by_k in other]))


def test_previous_ends_stay_inside_the_string():
    end = jnp.array([[0, 1, 0, 0, 1, 0, 1]], bool)
    sid = jnp.array([[0, 0, 0, 0, 1, 1, 1]])
    assert ca.previous_ends(end, sid).tolist() == [[-1, -1, 1, 1, -1, 4, 4]]


def test_position_only_pattern_leaves_zero_residual(rows):
    """A[h, i, j] = f_h(i - j): the position bias is f_h itself and every residual is 0."""
    bnd, sid = rows
    B, T = sid.shape
    d = np.arange(T)[:, None] - np.arange(T)[None, :]
    f_HxT = np.stack([0.5 ** np.arange(T), 0.9 ** np.arange(T) * 0.1])
    A = np.where(d >= 0, f_HxT[:, np.clip(d, 0, None)], 0.0)[None].repeat(B, 0)
    out = _stats(A, bnd, sid)
    np.testing.assert_allclose(out["position_bias"][0], f_HxT, rtol=1e-5, atol=1e-7)
    for key in ("target", "other"):
        res = out[key]["residual"]
        assert np.isfinite(res).sum() > 50  # the table is not empty ...
        assert np.nanmax(np.abs(res)) < 1e-5, key  # ... and all of it is explained by position


def test_pattern_on_the_previous_nt_end_gives_the_expected_table(rows):
    """Every token attends exactly to its previous level-3 NT end (self when it has none):
    the raw weight there is 1 and 0 on every other key, the residual is ~1 at key level 3 for
    every query set, and the whole table equals the loop definition."""
    bnd, sid = rows
    B, T = sid.shape
    k0 = LEVELS.index(3)
    A = np.zeros((B, H, T, T))
    for b in range(B):
        for i in range(T):
            j = _prev_end(bnd, sid, b, i, 3) if bnd[b, i, 0] >= 0 else -1
            A[b, :, i, j if j >= 0 else i] = 1.0
    out = _stats(A, bnd, sid)
    t, o = out["target"], out["other"]
    has = t["n"][:, k0, 0] > 0
    assert has.sum() >= 4  # query sets "ends at 2..5" and "any token" all reach a level-3 end
    np.testing.assert_allclose(t["attn"][0, has, k0, 0], 1.0, atol=1e-6)
    np.testing.assert_allclose(o["attn"][0, has, k0], 0.0, atol=1e-6)
    assert np.all(t["residual"][0, has, k0, 0] > 0.8)  # the bias takes little of it away
    assert np.all(np.abs(o["residual"][0, has, k0]) < 0.05)
    assert np.all(t["attn"][0, has, k0, 1] < 1e-6)  # the 2nd most adjacent end gets nothing
    ref_t, ref_o = _reference(A, bnd, sid)
    np.testing.assert_allclose(t["residual"][0], ref_t, atol=1e-5)
    np.testing.assert_allclose(o["residual"][0], ref_o, atol=1e-5)


def test_attention_mode_end_to_end(tmp_path):
    train_and_evaluate(tiny_cfg_run(), tmp_path)
    flat = run_analysis(tiny_cfg_run(mode="attention", attention={"n_rows": 8, "batch_size": 8}),
                        tmp_path)
    doc = json.loads((tmp_path / "attention" / "cfg.json").read_text())
    assert doc["step"] == doc["checkpoint_step"] == 2 and doc["levels"] == [1, 2, 3, 4, 5]
    assert {"trained", "control", "table", "heatmap", "counts"} <= set(doc)
    for m in ("trained", "control"):
        assert set(doc[m]) == {"position_bias", "boundary", "any_to_end", "dp_update", "summary"}
        assert np.array(doc[m]["position_bias"]).shape == (2, 2, 64)
        assert np.array(doc["heatmap"][m], dtype=float).shape == (2, 5, 5)
        assert set(doc[m]["dp_update"]) == {"parent", "grandparent"}
        assert f"{m}/summary/boundary_adjacent" in flat
    # A row of 64 tokens holds no whole level-1 span of cfg3b: those cells are empty (null).
    counts = np.array(doc["counts"]["boundary_queries"])
    assert counts[0].sum() == 0 and counts[3:, 3:].min() > 0
    trained, control = (np.array(doc["heatmap"][m], dtype=float) for m in ("trained", "control"))
    assert np.isnan(trained[:, 0]).all() and np.isfinite(trained[:, 3:, 3:]).all()
    assert not np.allclose(trained[:, 3:, 3:], control[:, 3:, 3:])  # two different models
    assert len(doc["table"]) == 2 * 5 * 5 and "control_adjacent_max_heads" in doc["table"][0]
    if importlib.util.find_spec("matplotlib") is not None:
        assert (tmp_path / "attention" / "cfg_attention_heatmap.png").stat().st_size > 0


def test_attention_settings_errors_name_the_key():
    parse = lambda raw: build_section("attention", AttentionSettings, raw)
    with pytest.raises(ConfigError, match=r"attention\.n_rows=0"):
        parse({"n_rows": 0})
    with pytest.raises(ConfigError, match=r"attention\.levels='some'"):
        parse({"levels": "some"})
    assert parse({"levels": [2, 3]}).levels == (2, 3)
