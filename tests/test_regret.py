"""Retry upon regret (Part 2.2): the hook rewinds exactly the sentence its detector rejects,
the probe detector's query sees exactly the row up to the previous sentence, detector quality
counts first wrong steps and right steps, and `mode=regret` writes the paper's table."""

from __future__ import annotations

import json

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import sample_igsm

from physics_lm.config import ModelConfig
from physics_lm.data.igsm.task import IGSMTask
from physics_lm.data.igsm.text.judge import judge_problem
from physics_lm.data.igsm.text.parser import parse_problem
from physics_lm.data.igsm.text.probe_labels import sentence_end_positions
from physics_lm.data.igsm.text.vocab import get_vocab
from physics_lm.eval import regret
from physics_lm.eval.decode import DecodeState
from physics_lm.eval.regret_run import detector_quality
from physics_lm.models.gpt2 import GPT2
from physics_lm.probing import heads

TASK = IGSMTask("custom", max_op=6, max_edge=8, seq_len=448, split="all")


def sampled_rows() -> list[tuple[list[int], int, list[int], np.ndarray]]:
    """Sampled rows with >= 3 solution sentences: (tokens up to the answer as a list, the
    solution start, the sentence ends, the whole row through EOS)."""
    v = get_vocab()
    batch = sample_igsm(TASK, 32, seed=5)
    out = []
    for b in range(32):
        if batch.labels["valid"][b] != 1 or batch.labels["overflow"][b]:
            continue
        ids = batch.tokens[b, : int(batch.labels["ans_pos"][b])].tolist()
        start, ends = sentence_end_positions(ids, v)
        if len(ends) >= 3:
            out.append((ids, start, ends, batch.tokens[b, : int(batch.labels["length"][b])]))
    return out


@pytest.fixture(scope="module")
def rows():
    """Sampled rows as token lists with their sentence ends (>= 3 solution sentences)."""
    out = [r[:3] for r in sampled_rows()]
    assert len(out) >= 4
    return out


def _sentence(ids, lo, hi):
    """(name tokens, the rest from ``as``) of the sentence ids[lo:hi] = ``Define name as ...``."""
    as_at = ids.index(get_vocab().word_to_id("as"), lo)
    return ids[lo + 1: as_at], ids[as_at:hi]


def _wrong_case(rows):
    """A row whose sentence k, renamed to the parameter of sentence k + 1, is judged wrong
    there (that parameter needs sentence k's first): (tokens, index of its Define, k)."""
    v = get_vocab()
    for ids, _start, ends in rows:
        problem = parse_problem(v.split_example(ids)[0])
        for k in range(1, len(ends) - 1):
            _, rest = _sentence(ids, ends[k - 1] + 1, ends[k] + 1)
            later, _ = _sentence(ids, ends[k] + 1, ends[k + 1] + 1)
            moved = [*ids[: ends[k - 1] + 2], *later, *rest]
            verdict = judge_problem(problem, v.split_example(moved)[1])
            if verdict.first_error == k:
                return moved, ends[k - 1] + 1, k
    pytest.fail("no wrong renaming among the sampled rows")


def _state(seqs, prompt_len, L, sentences_before, retries, hook, args):
    v = get_vocab()
    B = len(seqs)
    tokens = np.full((B, L), v.pad_id, np.int32)
    for b, s in enumerate(seqs):
        tokens[b, : len(s)] = s
    length = np.array([len(s) for s in seqs], np.int32)
    plen = np.asarray(prompt_len, np.int32)
    aux = hook.init(args, jnp.asarray(tokens[:, : plen.max()]), jnp.asarray(plen), L + 8)
    aux.update(prev_len=jnp.asarray(length - 1), n_sent=jnp.asarray(sentences_before, jnp.int32),
               retries=jnp.asarray(retries, jnp.int32))
    return DecodeState(jnp.asarray(tokens), jnp.asarray(length), jnp.zeros(B, bool),
                       jnp.zeros(B), jnp.zeros((B, 8)), jnp.zeros((), jnp.int32), None,
                       jnp.zeros(B), aux)


def test_judge_hook_rewinds_exactly_the_wrong_sentence(rows):
    v = get_vocab()
    ids, start, ends = rows[0]
    right = ids[: ends[1] + 1]  # the sampler's own sentence 1: right
    wrong, define, k = _wrong_case(rows)
    name = ids[ends[0] + 2: ids.index(v.word_to_id("as"), ends[0] + 1)]
    w = v.word_to_id
    back = [*ids[:ends[0] + 1], w("Define"), *name, w("as"), v.back_id, w(".")]
    seqs = [right, wrong, wrong, back]
    prompt_len = [start + 1, wrong.index(v.sol_id) + 1, wrong.index(v.sol_id) + 1, start + 1]
    L = max(map(len, seqs)) + 4
    hook = regret.RegretHook(ModelConfig(vocab_size=TASK.vocab_size), "perfect", max_retries=2)
    args = {"temperature": np.float32(0.0)}
    state = _state(seqs, prompt_len, L, [1, k, k, 1], [0, 0, 2, 0], hook, args)
    out = jax.device_get(jax.jit(lambda st: hook.step(st, args))(state))
    aux = out.aux
    # right sentence: kept, flagged "no regret"; back to the base temperature
    assert out.length[0] == len(right) and aux["flags"][0, 1] == 0 and aux["n_sent"][0] == 2
    # wrong sentence: cut back to the end of the previous sentence, resampled at T = 1
    assert out.length[1] == define and aux["flags"][1, k] == 1 and aux["retries"][1] == 1
    assert out.temperature[1] == 1.0 and aux["n_sent"][1] == k
    assert (out.tokens[1, define:] == v.pad_id).all() and not out.done[1]
    np.testing.assert_array_equal(out.tokens[1, :define], wrong[:define])
    # retries used up: kept and not asked
    assert out.length[2] == len(wrong) and aux["flags"][2, k] == -1 and aux["retries"][2] == 2
    # a BACK sentence is never asked, but counts as a sentence
    assert out.length[3] == len(back) and aux["flags"][3, 1] == -1 and aux["n_sent"][3] == 2
    assert out.temperature[0] == out.temperature[3] == 0.0


@pytest.mark.parametrize("pos", ["rotary", "relative"])
def test_probe_query_sees_exactly_the_row_up_to_the_previous_sentence(rows, pos):
    """The detector's query on a copy of its cache (later slots emptied) == a plain forward of
    the row up to p followed by ``<start> X <end>``."""
    v = get_vocab()
    cfg = ModelConfig(num_layers=2, d_model=32, num_heads=2, d_mlp=64,
                      vocab_size=TASK.vocab_size, pos=pos, max_len=512, rel_max_distance=16)
    model = GPT2(cfg)
    params = nn.unbox(model.init(jax.random.key(0), jnp.zeros((1, 8), jnp.int32))["params"])
    ids, start, ends = rows[1]
    seq = ids[: ends[2] + 1]  # ends sentence 2
    L = len(seq) + 4
    hook = regret.RegretHook(cfg, "probe", act=False)
    args = {"params": params, "temperature": np.float32(0.0),
            "heads": heads.init_heads(jax.random.key(1), ("linear",), 1, 32, (2,)),
            "norm": {"mean_NxD": jnp.zeros((1, 32)), "std_NxD": jnp.ones((1, 32))}}
    state = _state([seq[: start + 1]], [start + 1], L, [0], [0], hook, args)
    step = jax.jit(lambda st: hook.step(st, args))
    for t in range(start + 1, len(seq)):  # feed the solution one token per step, as decoding does
        tokens = state.tokens.at[0, t].set(seq[t])
        state = step(state._replace(tokens=tokens, length=jnp.asarray([t + 1], jnp.int32)))
    assert int(state.aux["flags"][0, 2]) in (0, 1) and int(state.aux["n_sent"][0]) == 3
    s = regret.find_sentence(state.tokens, state.length, jnp.ones(1, bool), state.aux["sol"])
    assert bool(s.ask[0]) and int(s.define[0]) == ends[1] + 1
    name = seq[int(s.define[0]) + 1: int(s.define[0]) + 1 + int(s.name_len[0])]
    assert v.decode(name).strip() and seq[int(s.define[0]) + 1 + len(name)] == v.word_to_id("as")
    got = regret.query_hidden(cfg, "final", params, state.aux["cache"], state.tokens, s)
    ref_seq = [*seq[:ends[1] + 1], v.start_id, *name, v.end_id]
    _, ref = model.apply({"params": params}, jnp.asarray([ref_seq]), capture=("final",))
    np.testing.assert_allclose(np.asarray(got[0]), np.asarray(ref["final"][0, -1]), atol=3e-5)


def test_detector_quality_counts_first_wrong_and_right_steps():
    rows = [
        {"flags": [0, 0, 1, -1], "correct": False, "first_error": 2, "error_kind": "nc"},
        {"flags": [1, 0, 0, 0], "correct": False, "first_error": 3, "error_kind": "wv"},
        {"flags": [0, -1, 0], "correct": True, "first_error": None, "error_kind": None},
        {"flags": [0, 1], "correct": False, "first_error": 1, "error_kind": "nc"},
    ]
    q = detector_quality(rows)
    assert q["n_wrong"] == 3 and q["recall"] == pytest.approx(2 / 3)
    assert q["recall_by_kind"] == {"nc": 1.0, "wv": 0.0}
    assert q["n_right"] == 2 + 3 + 2 + 1 and q["false_alarm"] == pytest.approx(1 / 8)


def test_regret_mode_writes_the_table(tmp_path, igsm_smoke_run):
    from physics_lm.analysis import run_analysis
    from physics_lm.config import from_config_dict

    c = igsm_smoke_run(tmp_path)
    c.mode = "regret"
    c.regret.update(detectors=("v1", "vP"), beams=(1,), n=4, decode_batch=4)
    run_analysis(from_config_dict(c), tmp_path)
    doc = json.loads((tmp_path / "regret" / "igsm.json").read_text())
    cell = c.regret.cells[0]
    assert doc["rows"] == ["beam1", "regret_v1", "regret_v1_beam2", "regret_vP",
                           "regret_vP_beam2"]
    for row in doc["rows"]:
        assert doc["table"][row][cell]["n"] == 4
    assert "retries_mean" in doc["table"]["regret_vP"][cell]
    assert "retries_mean" in doc["table"]["regret_vP_beam2"][cell]
    fit = doc["detectors"]["v1"]["fit"]
    assert fit["rank"] == 8 and fit["qv_rank"] == 0 and 0 <= fit["can_next"]["acc"] <= 1
    gens = [json.loads(line) for line in
            (tmp_path / "regret" / "igsm_generations.jsonl").read_text().splitlines()]
    by_row = {}
    for g in gens:
        by_row.setdefault(g["row"], []).append(g)
    # observing never changes a greedy generation
    assert [g["generated"] for g in by_row["observe_v1"]] == [
        g["generated"] for g in by_row["beam1"]]
    # the judge never lets a wrong step through while retries last (greedy and 2 beams)
    for g in by_row["regret_vP"] + by_row["regret_vP_beam2"]:
        w = g["first_error"]
        if g["retries"] < c.regret.retries and w is not None and w < len(g["flags"]):
            assert g["flags"][w] != 0, g
    assert (tmp_path / "regret" / "detector_v1.msgpack").exists()
    assert (tmp_path / "regret" / "regret_table.png").exists()


def test_a_saved_detector_is_reused_only_for_the_same_fit(tmp_path, monkeypatch):
    from types import SimpleNamespace

    from physics_lm.eval.regret_run import IGSMRegretSettings
    from physics_lm.probing import regret_detector as rd

    fits = []

    def fake_fit(loaded, version, settings):
        fits.append(settings.steps)
        return rd.Detector({"wte": {"a": np.ones((3, 2)), "b": np.zeros((2, 4))}},
                           {"linear": {"w": np.full((1, 4, 1, 2), 0.5)}},
                           {"mean_NxD": np.zeros((1, 4))},
                           {"checkpoint_step": loaded.step, "fit": rd.fit_key(settings)})

    monkeypatch.setattr(rd, "fit", fake_fit)
    s = IGSMRegretSettings(v1_steps=7)
    loaded = SimpleNamespace(step=4)
    first = rd.fit_or_load(loaded, "v1", s.probe_settings("v1"), tmp_path)
    again = rd.fit_or_load(loaded, "v1", s.probe_settings("v1"), tmp_path)
    assert fits == [7]
    np.testing.assert_array_equal(again.heads["linear"]["w"], first.heads["linear"]["w"])
    rd.fit_or_load(loaded, "v1", IGSMRegretSettings(v1_steps=9).probe_settings("v1"), tmp_path)
    rd.fit_or_load(SimpleNamespace(step=8), "v1", s.probe_settings("v1"), tmp_path)
    assert fits == [7, 9, 7]  # other settings, another checkpoint: refitted


def test_detector_quality_counts_the_first_error_of_a_row_the_budget_cut(reference_records):
    """A generation cut by the budget after a wrong sentence: the probe's flag on that sentence
    is a detection (recall), not a false alarm on a "right" step."""
    from physics_lm.eval import igsm_eval

    rec = reference_records("igsm/med_pq_public")[0]
    problem, sents = rec["problem"], rec["solution"][:-1].split(". ")
    head, _, old = sents[0].rpartition(" = ")
    text = f"{head} = {(int(old) + 1) % 23}. {sents[1]}. Define"
    row = igsm_eval._judged("op<=3", problem, problem, text, text, None, 3, False)
    q = detector_quality([{**row, "flags": [1, 0]}])
    assert row["first_error"] == 0
    assert q["recall"] == 1.0 and q["n_wrong"] == 1
