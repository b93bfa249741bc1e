"""The iGSM V-probe: queries and labels built on device equal the host label functions, packed
queries see exactly their truncated prefix, a planted feature is recovered through the rank-r
embedding update (shuffled labels are not), and the frozen model never changes."""

from __future__ import annotations

import dataclasses
import json
import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import FAST

from physics_lm.config import ModelConfig
from physics_lm.data.igsm.task import IGSMTask
from physics_lm.data.igsm.text.parser import parse_problem
from physics_lm.data.igsm.text.probe_labels import pair_labels, row_labels
from physics_lm.data.igsm.text.vocab import get_vocab, host_texts
from physics_lm.models.gpt2 import GPT2
from physics_lm.probing import igsm_probe, igsm_run
from physics_lm.probing import igsm_queries as iq
from physics_lm.probing import train_probe as tp

TASK = IGSMTask("custom", max_op=4, max_edge=6, seq_len=320, with_probes=True, split="all")
N_ROWS, Q = 24, 6


@pytest.fixture(scope="module")
def sampled():
    key = jax.random.PRNGKey(3)

    def draw(k):
        batch = TASK.sample(k, N_ROWS)
        return batch, iq.build_queries(jax.random.fold_in(k, 1), batch, iq.TASKS, Q, "pq")

    f = jax.jit(draw).lower(key).compile(FAST)
    return jax.tree.map(np.asarray, f(key))


def _host_param(problem, vocab, name_ids):
    text = vocab.decode(name_ids).strip()
    assert text in problem.name_to_param, text
    return problem.name_to_param[text]


def test_device_queries_equal_host_labels(sampled):
    batch, q = sampled
    v = get_vocab()
    L = q.tokens.shape[-1]
    checked = {t: 0 for t in iq.TASKS}
    for b in range(N_ROWS):
        if batch.labels["valid"][b] != 1 or batch.labels["overflow"][b]:
            assert (q.labels[b] == -1).all()
            continue
        problem_text, _, solution, _ = host_texts(v, batch.tokens[b])
        problem = parse_problem(problem_text)
        if len(problem.all_param) != batch.labels["probe_n_params"][b]:
            continue  # a childless top item is invisible in the text (SPEC §17)
        rows, pairs = row_labels(problem, solution), pair_labels(problem)
        index = problem.param_index
        sol, row_pos = batch.labels["sol_pos"][b], batch.labels["row_pos"][b]
        toks = batch.tokens[b]
        for j in range(q.labels.shape[1]):
            task = iq.TASKS[q.task[j]]
            ids = q.tokens[b, j]
            end = q.end[b, j]
            assert ids[0] == v.start_id and ids[end] == v.end_id
            assert (ids[end + 1:] == v.pad_id).all()
            inner = list(ids[1:end])
            if task == "dep":
                mid = inner.index(v.mid_id)
                a = _host_param(problem, v, inner[:mid])
                bb = _host_param(problem, v, inner[mid + 1:])
                assert a != bb
                assert q.labels[b, j] == pairs["dep"][index[a], index[bb]]
                p = q.pos[b, j]
                assert toks[p] == v.word_to_id(".") and toks[p + 1] == v.word_to_id("How")
            else:
                a = _host_param(problem, v, inner)
                if task == "nece":
                    assert q.pos[b, j] == sol - 1 and toks[sol - 1] == v.word_to_id("?")
                    assert q.labels[b, j] == rows.nece[0, index[a]]
                else:
                    r = q.row[b, j]
                    assert 0 <= r < rows.known.shape[0] and q.pos[b, j] == row_pos[r]
                    assert q.labels[b, j] == getattr(rows, task)[r, index[a]], (task, r, a)
            assert 0 <= q.pos[b, j] < sol + 400 and ids.shape[0] == L
            checked[task] += 1
    assert min(checked.values()) >= 20, checked


@pytest.mark.parametrize("pos", ["rotary", "relative", "absolute"])
def test_packed_queries_see_exactly_their_truncated_prefix(sampled, pos):
    batch, q = sampled
    cfg = ModelConfig(num_layers=2, d_model=32, num_heads=2, d_mlp=64,
                      vocab_size=TASK.vocab_size, pos=pos, max_len=512, rel_max_distance=16)
    model = GPT2(cfg)
    params = nn.unbox(model.init(jax.random.key(0), jnp.zeros((1, 8), jnp.int32))["params"])
    b, sel = 0, np.array([0, 7, 13, 20, 31])  # nece, dep, known, value, can_next rows
    qq = jax.tree.map(lambda x: x[b:b + 1, sel] if x.ndim > 1 else x[sel], q)
    packed = iq.pack(jnp.asarray(batch.tokens[b:b + 1]), qq, TASK.seq_len)
    _, acts = model.apply({"params": params}, packed.tokens, capture=("final",),
                          positions_BxT=packed.positions,
                          segments=(packed.segments, packed.context))
    got = np.asarray(acts["final"][0, packed.end[0]])
    for i in range(len(sel)):
        p, e = int(qq.pos[0, i]), int(qq.end[0, i])
        seq = np.concatenate([batch.tokens[b, :p + 1], qq.tokens[0, i, :e + 1]])[None]
        _, ref = model.apply({"params": params}, jnp.asarray(seq), capture=("final",))
        np.testing.assert_allclose(got[i], np.asarray(ref["final"][0, -1]), atol=2e-5)


def _tiny_model():
    # uniform attention: <end> reads the mean of the last 1 and 3 tokens' values, so a fact of
    # the query's last name token reaches it -- once the embedding update makes it linear
    cfg = ModelConfig(num_layers=2, d_model=32, num_heads=2, d_mlp=64,
                      vocab_size=TASK.vocab_size, pos="uniform", max_len=512)
    model = GPT2(cfg)
    params = nn.unbox(model.init(jax.random.key(0), jnp.zeros((1, 8), jnp.int32))["params"])
    prob = igsm_probe.make_problem(dataclasses.replace(TASK, split="train"), model,
                                   jax.eval_shape(lambda: params), ("final",), tasks=("nece",),
                                   queries=8, delta="shared")
    return prob, params


@pytest.fixture(scope="module")
def pool():
    """96 sampled probe rows (one sampler compile); the fits below draw rows from it."""
    prob, params = _tiny_model()
    key = jax.random.PRNGKey(7)
    return prob, params, jax.jit(lambda k: prob.sample_fn(k, 96)).lower(key).compile(FAST)(key)


def _from_pool(pool, labels_from):
    prob, params, rows = pool

    def sample(key, batch_size):
        idx = jax.random.randint(key, (batch_size,), 0, 96)
        pb = jax.tree.map(lambda x: x[idx], rows)
        y = labels_from(key, pb)
        return pb._replace(labels=jnp.where(pb.labels >= 0, y[..., None], -1),
                           focus=(y == 1)[..., None] & (pb.labels >= 0))

    return dataclasses.replace(prob, sample_fn=sample), params


def _fit(prob, params, steps):
    s = tp.FitSettings(steps=steps, batch_size=8, lr=3e-3, warmup_steps=10, eval_batches=4,
                       kinds=("linear",), log_every=steps)
    tx, jit_train, jit_eval = tp.jit_steps(prob, s)
    state = tp.init_probe_state(prob, tx, s, 1, 32)
    before = jax.tree.map(np.array, params)
    state, _ = tp.fit(jit_train, state, params, s)
    jax.tree.map(np.testing.assert_array_equal, before, jax.tree.map(np.asarray, params))
    return state, tp.evaluate(jit_eval, state, params, s.eval_batches)


def test_planted_feature_is_recovered_and_shuffled_labels_are_not(pool):
    """Planted: is A an abstract parameter ("X's <category>"), a fact of the query's own tokens.
    A random frozen model only carries it if the embedding update makes it; shuffled labels
    (independent of the input) cannot beat the majority class."""
    planted, params = _from_pool(pool, lambda key, pb: pb.inputs["meta"]["abstract"].astype(int))
    state, res = _fit(planted, params, 150)
    delta = state.params["features"]["wte"]["b"]
    assert float(jnp.abs(delta).max()) > 0  # the embedding update was trained
    acc, majority = res["linear"]["acc"][0, 0], res["baseline"]["majority"][0]
    assert acc >= 0.9 and acc > majority + 0.1, (acc, majority)

    def shuffled(key, pb):
        return jax.random.bernoulli(jax.random.fold_in(key, 99), 0.3, pb.labels.shape[:2]
                                    ).astype(jnp.int32)

    noise, params = _from_pool(pool, shuffled)
    _, res = _fit(noise, params, 100)
    assert res["linear"]["acc"][0, 0] <= res["baseline"]["majority"][0] + 0.03


def test_eval_splits_are_test_bins_in_and_out_of_distribution():
    splits = igsm_run.eval_tasks(dataclasses.replace(TASK, split="train"), ())
    assert list(splits) == ["id", "op=9", "op=10", "op=11", "op=12"]  # max_op 4: M+5..M+8
    for name, t in splits.items():
        assert t.split == "test" and t.with_probes and t.op == (None if name == "id" else
                                                                 int(name[3:]))
        assert t.seq_len >= max(TASK.seq_len, t.min_seq_len)
    assert list(igsm_run.eval_tasks(TASK, (7,))) == ["id", "op=7"]


def test_depth_table_buckets_by_distance():
    q = {"dist": np.array([0, 1, 1, 2, 12]), "label": np.array([1, 1, 0, 1, 0]),
         "pred": np.array([[1, 1, 1, 0, 0], [0, 0, 0, 0, 0]])}
    table = igsm_run.depth_table(q)
    assert table["n"] == [1, 2, 1, 0, 0, 0, 0, 0, 0, 1]
    assert table["acc"][0][:4] == [1.0, 0.5, 0.0, None] and table["acc"][0][9] == 1.0
    assert table["acc"][1][:3] == [0.0, 0.5, 0.0]


def test_probe_mode_writes_every_task_and_the_control(tmp_path, igsm_smoke_run, monkeypatch):
    from physics_lm.analysis import run_analysis
    from physics_lm.config import from_config_dict

    c = igsm_smoke_run(tmp_path)
    c.mode = "probe"
    c.probe.update(depth=False, steps=10)  # the depth fit is the same code on all layers
    # one scored split: every split runs the same jitted eval (a sampler compile each)
    monkeypatch.setattr(igsm_run, "eval_tasks", lambda task, ops: {
        "id": dataclasses.replace(task, split="test", with_probes=True)})
    out = run_analysis(from_config_dict(c), tmp_path)
    doc = json.loads((tmp_path / "probe" / "igsm.json").read_text())
    assert out["step"] == 4 and doc["splits"] == ["id"]
    for task in iq.TASKS:
        cell = doc["results"][task]["id"]
        assert 0 <= cell["majority"] <= 1
        for model in ("trained", "control"):
            assert cell[model]["n"] > 0 and 0 <= cell[model]["acc"] <= 1
            key = "acc_known" if task == "value" else "acc_pos"
            assert key in cell[model]
    assert "depth" not in doc and (tmp_path / "probe" / "probe_accuracy.png").exists()


def test_own_mistake_queries_sit_before_the_first_wrong_step(sampled):
    """A generation that starts with the question's sentence (not computable yet) gets one
    query about that parameter at <solution>, labelled along the generation (SPEC §15); its
    packed features equal the truncated forward pass."""
    from physics_lm.eval.igsm_eval import _judged
    from physics_lm.probing import igsm_mistakes

    batch, _ = sampled
    v = get_vocab()
    b = next(i for i in range(N_ROWS) if batch.labels["valid"][i] and batch.labels["op"][i] >= 2
             and not batch.labels["overflow"][i])
    problem_text, _, solution, answer = host_texts(v, batch.tokens[b])
    problem = parse_problem(problem_text)
    first = solution.split(" as ", 1)  # "Define <name> as x; so x = ..."
    assert first[0].startswith("Define ") and first[0][7:] != problem.name(problem.question)
    wrong = f"Define {problem.name(problem.question)} as {first[1]}"  # computed too early
    sol = int(batch.labels["sol_pos"][b])
    prompt_ids = batch.tokens[b, :sol + 1].tolist()
    gen_ids = [*v.encode(wrong), v.ans_id, *v.encode(answer), v.eos_id]
    row = _judged("op=4", problem_text, v.decode(prompt_ids), v.decode(gen_ids), wrong, answer,
                  int(batch.labels["op"][b]), True)
    assert row["error_kind"] == "not_computable" and row["first_error"] == 0, row
    ids, queries = igsm_mistakes._queries(row)
    assert ids[:sol + 1] == prompt_ids and len(queries) == 1
    q = queries[0]
    assert q["pos"] == sol and q["name"] == problem.name(problem.question)
    host = row_labels(problem, wrong)
    col = problem.param_index[problem.question]
    assert q["labels"] == {t: int(getattr(host, t)[0, col]) for t in igsm_mistakes.ROW_PROBES}
    assert q["labels"]["can_next"] == 0 and q["labels"]["known"] == 0

    cfg = ModelConfig(num_layers=2, d_model=32, num_heads=2, d_mlp=64,
                      vocab_size=TASK.vocab_size, pos="rotary", max_len=512)
    model = GPT2(cfg)
    params = nn.unbox(model.init(jax.random.key(0), jnp.zeros((1, 8), jnp.int32))["params"])
    packed = igsm_mistakes._host_batch([(ids, q)], 384, 17, 1)
    packed = jax.tree.map(lambda x: x[:, 0], packed)
    _, acts = model.apply({"params": params}, packed.tokens, capture=("final",),
                          positions_BxT=packed.positions,
                          segments=(packed.segments, packed.context))
    name = v.encode(q["name"])
    seq = jnp.asarray([[*ids[:sol + 1], v.start_id, *name, v.end_id]])
    _, ref = model.apply({"params": params}, seq, capture=("final",))
    np.testing.assert_allclose(np.asarray(acts["final"][0, packed.end[0, 0]]),
                               np.asarray(ref["final"][0, -1]), atol=2e-5)


def _mistake_row(reference_records, sentences):
    """A judged generation (as `eval` writes it) of the given solution sentences."""
    from physics_lm.eval import igsm_eval

    rec = next(r for r in reference_records("igsm/med_pq_public")
               if len(r["solution"][:-1].split(". ")) >= 6)
    v = get_vocab()
    ids = v.encode_example(rec["problem"], rec["solution"], str(rec["answer"]))
    prompt = v.decode(ids[: ids.index(v.sol_id) + 1])
    generated = ". ".join(sentences(rec["solution"][:-1].split(". "))) + "."
    row = igsm_eval._judged("op=9", rec["problem"], prompt, generated, generated, "0", 9,
                            True)
    return row, parse_problem(rec["problem"])


def test_mistake_queries_are_asked_where_their_labels_were_taken(reference_records):
    """The own-mistakes probe asks about the first wrong parameter after the last correct
    sentence, with the labels of that row; where the label walk stopped earlier (a parameter
    defined twice, which the judge accepts under a new symbol) the query is dropped."""
    from physics_lm.probing.igsm_mistakes import _queries

    def wrong_value(s):
        head, _, old = s.rpartition(" = ")
        return f"{head} = {(int(old) + 1) % 23}"

    row, problem = _mistake_row(reference_records, lambda s: [*s[:3], wrong_value(s[3])])
    assert row["first_error"] == 3 and not row["correct"]
    ids, queries = _queries(row)
    [q] = [q for q in queries if q["kind"] == "wrong"]
    labels = row_labels(problem, row["solution"])
    assert labels.sentences == (-1, 0, 1, 2)
    col = problem.param_index[problem.name_to_param[q["name"]]]
    assert q["labels"] == {t: int(getattr(labels, t)[-1, col]) for t in ("can_next",
                                                                           "nece_next", "known")}
    assert q["labels"]["known"] == 0 and ids[q["pos"]] == get_vocab().word_to_id(".")

    def duplicate_first(s):  # s0, s0 again under a new symbol, s1, s2, then the wrong s3
        sym = re.search(r" as (\w+);", s[0]).group(1)
        again = re.sub(rf"\b{sym}\b", "Z", s[0].split(" as ", 1)[1])
        return [s[0], f"{s[0].split(' as ', 1)[0]} as {again}", *s[1:3], wrong_value(s[3])]

    row, problem = _mistake_row(reference_records, duplicate_first)
    assert row["first_error"] == 4 and row_labels(problem, row["solution"]).sentences == (-1, 0)
    assert [q for q in _queries(row)[1] if q["kind"] == "wrong"] == []
