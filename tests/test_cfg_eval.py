"""Part 1 evaluation: exact metric values on a known model, end-to-end eval/sample modes."""

import importlib.util
import json
import math
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from physics_lm.analysis import run_analysis
from physics_lm.config import ConfigError, ModelConfig, build_section, from_config_dict
from physics_lm.data.cfg import membership, nexttoken
from physics_lm.data.cfg.grammar import load_grammar
from physics_lm.data.cfg.parse import parse_spans
from physics_lm.data.cfg.sampler import sample_strings
from physics_lm.data.cfg.task import corrupt_tokens
from physics_lm.eval.cfg_eval import EvalConfig, distribution_metrics, true_strings
from physics_lm.models.gpt2 import GPT2
from physics_lm.report import curves
from physics_lm.report.runs import find_runs
from physics_lm.train.trainer import train_and_evaluate

G = load_grammar("cfg3b")


def test_distribution_metrics_exact_on_a_uniform_model():
    """All-zero params give logits 0: loss = log V, entropy = log(num_sym + 1), and the KL and
    the Bayes loss must equal what the DP gives directly. Catches any row/target misalignment."""
    cfg = ModelConfig(num_layers=1, num_heads=2, d_model=8, vocab_size=G.vocab_size, max_len=512)
    params = nn.unbox(GPT2(cfg).init(jax.random.key(0), jnp.zeros((1, 4), jnp.int32))["params"])
    params = jax.tree.map(jnp.zeros_like, params)
    strings = true_strings(G, jax.random.key(1), 3)
    dist, loss = distribution_metrics(cfg, params, G, strings, EvalConfig(), 512)
    assert loss["model_nll_per_token"] == pytest.approx(math.log(G.vocab_size), abs=1e-6)
    assert dist["entropy_model"] == pytest.approx(math.log(G.num_sym + 1), abs=1e-9)
    n_tok = sum(len(s) + 1 for s in strings)  # every terminal, then EOS
    assert loss["n_tokens"] == dist["n_rows"] == n_tok
    log_p = sum(nexttoken.log_prob_string(G, s) for s in strings)
    assert loss["true_nll_per_token"] == pytest.approx(-log_p / n_tok, rel=1e-9)
    uniform = np.full((1, G.num_sym + 1), 1.0 / (G.num_sym + 1))
    kl = np.mean([np.mean([nexttoken.kl_true_vs_model(row[None], uniform)
                           for row in nexttoken.next_token_probs(G, s)]) for s in strings])
    assert dist["kl"] == pytest.approx(kl, rel=1e-9)
    assert 0.2 < dist["entropy_true"] < 0.7 and dist["kl"] > 0.3
    # Forbidden mass: uniform over the V ids, so a row loses 1 - (allowed tokens) / V.
    forb = [1.0 - (nexttoken.next_token_probs(G, s) > 0).sum(-1) / G.vocab_size for s in strings]
    assert dist["forbidden_mass_per_string"] == pytest.approx(np.mean([f.sum() for f in forb]))
    assert dist["valid_prob_teacher_forced"] == pytest.approx(
        np.mean([np.prod(1.0 - f) for f in forb]))
    # Row groups from the parse: a node starting at r also starts every deeper level there, so
    # level l owns |spans[l]| - |spans[l-1]| rows (level 1: minus the root's row 0).
    spans = [parse_spans(G, s) for s in strings]
    bb = dist["by_boundary"]
    assert list(bb) == ["start", *(f"level{lv}" for lv in range(1, G.depth)), "terminal", "end"]
    assert bb["start"]["rows"] == bb["end"]["rows"] == 3
    assert bb["level1"]["rows"] == sum(len(sp[1]) - 1 for sp in spans)
    for lv in range(2, G.depth):
        assert bb[f"level{lv}"]["rows"] == sum(len(sp[lv]) - len(sp[lv - 1]) for sp in spans)
    assert bb["terminal"]["rows"] == sum(len(s) - len(sp[G.depth - 1])
                                         for s, sp in zip(strings, spans, strict=True))
    assert sum(g["rows"] for g in bb.values()) == n_tok
    assert bb["end"]["forbidden_mass"] == pytest.approx(1.0 - 1.0 / G.vocab_size)  # EOS only
    assert sum(g["forbidden_share"] for g in bb.values()) == pytest.approx(1.0)


def test_eval_config_rejects_unknown_and_mistyped_keys():
    parse = lambda raw: build_section("eval", EvalConfig, raw)
    assert parse({"temperatures": [1, 0.5]}).temperatures == (1.0, 0.5)
    with pytest.raises(ConfigError, match=r"eval\.n_gen"):
        parse({"n_gen": 4})
    with pytest.raises(ConfigError, match=r"eval\.n_generate"):
        parse({"n_generate": 2.5})
    with pytest.raises(ConfigError, match=r"eval\.temperatures\[1\]='x'"):
        parse({"temperatures": [1, "x"]})


def test_corrupted_prefix_scoring_accepts_repairable_strings():
    """The robustness score: a true string whose prefix was corrupted is repairable (wildcard
    prefix), but mostly not a member as it stands."""
    s = jax.device_get(sample_strings(jax.random.key(4), G, 8))
    bad, _ = corrupt_tokens(jax.random.key(5), jnp.asarray(s.tokens), jnp.minimum(s.length, 20),
                            0.3, G.num_sym)
    strings = [np.asarray(bad)[i, : s.length[i]].tolist() for i in range(8)]
    assert membership.check_strings(G, strings, wildcard_prefix_lens=[20] * 8).all()
    assert membership.check_strings(G, strings).mean() < 0.5


def _tiny_run(tmp_path, mode="train", extra=None):
    c = {
        "mode": mode, "seed": 1,
        "task": {"name": "cfg", "grammar": "cfg3b", "seq_len": 64, "corrupt_rate": 0.2},
        "model": {"num_layers": 2, "num_heads": 4, "d_model": 32, "max_len": 64, "pos": "rotary"},
        "optim": {"warmup_steps": 1, "lr": 3e-3},
        "train": {"batch_size": 8, "num_steps": 2, "log_every": 1, "eval_every": 100,
                  "eval_batches": 1, "checkpoint_every": 2},
        **(extra or {}),
    }
    return from_config_dict(c)


def test_evaluate_and_sample_checkpoint_end_to_end(tmp_path):
    train_and_evaluate(_tiny_run(tmp_path), tmp_path)
    ev = {"n_generate": 8, "temperatures": [1.0], "prefix_len": 8, "decode_batch": 8, "n_dp": 8,
          "n_entropy": 4, "robust_temperatures": [1.0, 0.1], "control": True}
    flat = run_analysis(_tiny_run(tmp_path, "eval", {"eval": ev}), tmp_path)
    text = (tmp_path / "eval" / "cfg.json").read_text()
    assert "NaN" not in text  # strict JSON (no valid generation -> null entropy)
    res = json.loads(text)
    assert set(res) >= {"step", "generation", "truth", "distribution", "loss", "robustness",
                        "control", "eval_config"}
    assert res["step"] == 2 and set(res["generation"]) == {"cut0", "cut8"}
    for setting in ("cut0", "cut8"):
        m = res["generation"][setting]["T1"]
        assert 0.0 <= m["accuracy"] <= m["eos_frac"] <= 1.0 and m["n"] == 8
    # Two training steps memorise nothing (and 64 tokens cannot hold a cfg3b string), while the
    # true sampler's strings all pass the same checker.
    assert res["generation"]["cut0"]["T1"]["accuracy"] < 0.5
    assert res["truth"]["accuracy"] == 1.0
    sub = res["diversity"]["subtrees"]["T1"]  # parsed: exactly the valid cut0 generations
    assert sub["n_strings"] == round(8 * res["generation"]["cut0"]["T1"]["accuracy"])
    assert [lv["level"] for lv in sub["levels"]] == list(range(6))
    d = res["distribution"]
    assert d["kl"] > 0.0 and len(d["kl_by_position"]) == 64 and d["n_rows"] == 8 * 64
    assert d["entropy_model"] > d["entropy_true"]  # near-uniform model vs a sharp grammar
    assert res["loss"]["model_nll_per_token"] > res["loss"]["true_nll_per_token"] > 0.0
    rob = res["robustness"]
    assert rob["corrupt_rate"] == 0.2 and rob["flipped_mean"] > 0
    assert set(rob["T0.1"]) == {"corrupted_acc", "repaired_acc", "repairs_hist", "repairs_mean",
                                "clean_acc"}
    assert rob["T0.1"]["repaired_acc"] <= rob["T0.1"]["corrupted_acc"]
    assert flat["distribution/kl"] == d["kl"] and "control/distribution/kl" in flat
    if importlib.util.find_spec("matplotlib"):
        assert (tmp_path / "eval" / "cfg_kl_by_position.png").stat().st_size > 0
        assert (tmp_path / "eval" / "cfg_forbidden_by_level.png").stat().st_size > 0

    out = run_analysis(_tiny_run(tmp_path, "sample", {"sample": {"n": 4, "prefix_len": 5}}),
                       tmp_path)
    assert out["path/step2_cut5_T1"].endswith("sample/cfg_step2_cut5_T1.jsonl")
    lines = [json.loads(x) for x in Path(out["path/step2_cut5_T1"]).read_text().splitlines()]
    assert len(lines) == 4 and all(x["prefix_len"] == 5 and len(x["tokens"]) >= 5 for x in lines)
    assert out["accuracy"] == np.mean([x["valid"] for x in lines])
    # A tagged second run of a mode writes beside the first instead of over it.
    untagged = Path(out["path/step2_cut5_T1"]).read_text()
    tagged = run_analysis(_tiny_run(tmp_path, "sample", {"sample": {"n": 2, "prefix_len": 5},
                                                         "tag": "n2"}), tmp_path)
    assert tagged["path/step2_cut5_T1"].endswith("sample-n2/cfg_step2_cut5_T1.jsonl")
    assert len(Path(tagged["path/step2_cut5_T1"]).read_text().splitlines()) == 2
    assert Path(out["path/step2_cut5_T1"]).read_text() == untagged


def test_analysis_sections_are_validated_at_load_whatever_the_mode(tmp_path):
    for mode in ("train", "eval", "probe"):  # a typo in eval fails before a training run
        with pytest.raises(ConfigError, match=r"eval\.bogus"):
            _tiny_run(tmp_path, mode, {"eval": {"bogus": 1}})
    with pytest.raises(ConfigError, match=r"eval\.n_generate=0"):
        _tiny_run(tmp_path, "train", {"eval": {"n_generate": 0}})
    with pytest.raises(ConfigError, match=r"sample\.temperature='hot'"):
        _tiny_run(tmp_path, "train", {"sample": {"temperature": "hot"}})
    cfg = _tiny_run(tmp_path, "train", {"eval": {"temperatures": [1, 0.5]}})
    assert cfg.eval.temperatures == (1.0, 0.5) and cfg.probe.steps > 0  # defaults filled in
    with pytest.raises(ConfigError, match=r"has no config\.json"):  # nothing trained there
        run_analysis(_tiny_run(tmp_path, "eval"), tmp_path / "empty")


def test_first_error_finds_the_first_forbidden_token():
    from physics_lm.eval.cfg_eval import first_error

    g = load_grammar("cfg3b")
    s = true_strings(g, jax.random.key(3), 4)[0]
    assert first_error(g, s, eos=True) == len(s) + 1  # nothing forbidden, EOS allowed
    assert first_error(g, s, eos=False) == len(s)
    assert first_error(g, s[:-5], eos=True) == len(s) - 5  # EOS too early: the error
    # Wrong tokens from position 40 on: the first error is at 40 or a little later (a wrong
    # token may still start some other string), never before.
    bad = s[:40] + [t % 3 + 1 for t in s[40:]]
    k = first_error(g, bad, eos=False)
    assert 40 <= k < len(s)
    assert first_error(g, bad[:k], eos=False) == k  # the prefix before it is clean
    assert first_error(g, [*s[:7], g.bos_id, *s[8:]], eos=True) == 7  # a non-terminal id


def test_repair_scores_on_hand_made_corrupted_prefixes():
    """A true string with k prefix tokens flipped needs 1..k repairs: repaired within a budget
    of k, not within 0; a broken tail can never be repaired and stays out of the histogram."""
    from physics_lm.eval.cfg_eval import repair_scores

    s = true_strings(G, jax.random.key(8), 3)
    one = [s[0][0] % 3 + 1, *s[0][1:]]  # first token flipped to another terminal
    two = [s[1][0] % 3 + 1, s[1][1] % 3 + 1, *s[1][2:]]
    broken = [*s[2][:-3], s[2][-1] % 3 + 1] * 2  # a tail no prefix repair can fix
    strings, lens = [one, two, s[2], broken], [10, 10, 10, 10]
    valid = membership.check_strings(G, strings, wildcard_prefix_lens=lens)
    assert valid.tolist() == [True, True, True, False]
    got = repair_scores(G, strings, lens, [1, 2, 0, 3], valid)
    assert got["repaired_acc"] == 0.75  # one, two within their flips; the clean one with 0
    hist = got["repairs_hist"]
    assert sum(hist) == 3 and hist[0] == 1 and sum(hist[1:3]) == 2
    assert repair_scores(G, strings, lens, [0, 0, 0, 0], valid)["repaired_acc"] == 0.25


def test_periodic_analysis_logs_a_learning_curve(tmp_path):
    """train.analysis_every: the eval metrics at every N steps in metrics.jsonl (one process)."""
    ev = {"n_generate": 4, "temperatures": [1.0], "prefix_len": 8, "decode_batch": 4, "n_dp": 4,
          "n_entropy": 2, "robust": False, "control": True}
    train = {"batch_size": 8, "num_steps": 2, "log_every": 1, "eval_every": 100,
             "eval_batches": 1, "checkpoint_every": 2, "analysis_every": 1}
    cfg = _tiny_run(tmp_path, "train", {"eval": ev, "train": train})
    train_and_evaluate(cfg, tmp_path)
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    curve = [(r["step"], r["eval/distribution/kl"]) for r in rows if "eval/distribution/kl" in r]
    assert [s for s, _ in curve] == [1, 2] and all(kl > 0 for _, kl in curve)
    assert all("eval/generation/cut0/T1/accuracy" in r for r in rows if "eval/distribution/kl" in r)
    assert not any(k.startswith("eval/control") for r in rows for k in r)  # control skipped
    # the report reads the same records back as a curve on the tokens axis
    (run,) = find_runs(tmp_path)
    pts = [p for p in curves.curve(run).points if p.kl is not None]
    assert [(p.step, p.tokens, p.kl, p.n) for p in pts] == [(s, s * 8 * 64, kl, 4)
                                                            for s, kl in curve]
