"""iGSM evaluation: the plumbing judges the sampler's own solutions correct (an oracle decoder),
and every number of eval/igsm.json is a recount of eval/igsm_generations.jsonl."""

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from physics_lm.analysis import run_analysis
from physics_lm.config import ModelConfig, from_config_dict
from physics_lm.data.igsm import cells as cells_lib
from physics_lm.data.igsm.text.vocab import get_vocab
from physics_lm.eval import igsm_eval
from physics_lm.eval.decode import DecodeResult


def _smoke(load_config, mode="train", **eval_section):
    c = load_config("igsm", "smoke")
    c.mode = mode
    c.train.num_steps = 4
    c.optim.warmup_steps = 1
    c.train.checkpoint_every = 4
    c.eval.update(n=6, decode_batch=4, cells=("op<=3", "op=8"), **eval_section)
    return from_config_dict(c)


def test_oracle_decoder_is_judged_correct_in_every_cell(load_config, monkeypatch):
    """Decoding the sampler's own continuation: accuracy 1, shortest, nothing unnecessary."""
    cfg = _smoke(load_config, teacher_forced=False)  # no model params here
    task = __import__("physics_lm.data.registry", fromlist=["build_task"]).build_task(cfg.task)
    truth = {}

    def oracle(model_cfg, params, key, prompt, prompt_len, max_new, ec):
        rows = [truth[tuple(prompt[b, : prompt_len[b]].tolist())] for b in range(len(prompt))]
        L = prompt.shape[1] + max_new
        tokens = np.zeros((len(rows), L), np.int32)
        length = np.zeros(len(rows), np.int32)
        for b, row in enumerate(rows):
            tokens[b, : len(row)] = row
            length[b] = len(row)
        return DecodeResult(jnp.asarray(tokens), jnp.asarray(length), jnp.asarray(prompt_len),
                            jnp.ones(len(rows), bool), jnp.zeros(len(rows)))

    real_batch = cells_lib.cell_batch

    def remember(task_, seed, name, n):
        batch = real_batch(task_, seed, name, n)
        tok, lab = jax.device_get((batch.tokens, batch.labels))
        for b in range(n):
            end = int(lab["ans_pos"][b]) + 3  # <answer> A <eos>, EOS included
            truth[tuple(tok[b, : int(lab["sol_pos"][b]) + 1].tolist())] = tok[b, :end].tolist()
        return batch

    monkeypatch.setattr(cells_lib, "cell_batch", remember)
    monkeypatch.setattr(igsm_eval, "_decode", oracle)
    model_cfg = ModelConfig(num_layers=1, num_heads=2, d_model=16, vocab_size=task.vocab_size,
                            max_len=64, pos="rotary")
    doc, rows = igsm_eval.evaluate_igsm(model_cfg, None, task, cfg.eval)
    for name, m in doc["cells"].items():
        assert m["n"] == 6 and m["accuracy"] == 1.0, (name, m, rows[0]["reason"])
        assert m["shortest_frac"] == 1.0 and m["unnecessary_params"] == 0.0
        assert m["unnecessary_ops"] == 0.0
    assert doc["cells"]["op=8"]["op_mean"] == 8.0


def test_a_truncated_generation_counts_its_back_sentences(reference_records):
    """A retry model that loops on "Define X as BACK." never answers; its BACKs are reported."""
    problem_text = reference_records("igsm/med_pq_public")[0]["problem"]
    loop = " Define A as BACK. Define B as BACK. Define A as BACK. Define B as"
    row = igsm_eval._judged("op<=3", problem_text, problem_text, loop, None, None, 3, False)
    assert row["error_kind"] == "truncated" and not row["correct"]
    assert row["n_back"] == 3
    assert igsm_eval.summarize([row], True)["back_mean"] == 3.0


def test_rows_cut_while_right_are_decoded_again_with_the_whole_budget(load_config, monkeypatch):
    """A correct solution longer than the op-based budget is not counted wrong: the rows the
    budget cut with every sentence right get a second pass at 2048 - prompt tokens."""
    cfg = _smoke(load_config, teacher_forced=False)
    task = __import__("physics_lm.data.registry", fromlist=["build_task"]).build_task(cfg.task)
    truth, budgets = {}, []

    def oracle(model_cfg, params, key, prompt, prompt_len, max_new, ec):
        budgets.append(max_new)
        B, L = len(prompt), prompt.shape[1] + max_new
        tokens, length = np.zeros((B, L), np.int32), np.zeros(B, np.int32)
        done = np.zeros(B, bool)
        for b in range(B):
            row = truth[tuple(prompt[b, : prompt_len[b]].tolist())][: prompt_len[b] + max_new]
            tokens[b, : len(row)], length[b] = row, len(row)
            done[b] = row[-1] == get_vocab().eos_id
        return DecodeResult(jnp.asarray(tokens), jnp.asarray(length), jnp.asarray(prompt_len),
                            jnp.asarray(done), jnp.zeros(B))

    real_batch = cells_lib.cell_batch

    def remember(task_, seed, name, n):
        batch = real_batch(task_, seed, name, n)
        tok, lab = jax.device_get((batch.tokens, batch.labels))
        for b in range(n):
            end = int(lab["ans_pos"][b]) + 3
            truth[tuple(tok[b, : int(lab["sol_pos"][b]) + 1].tolist())] = tok[b, :end].tolist()
        return batch

    monkeypatch.setattr(cells_lib, "cell_batch", remember)
    monkeypatch.setattr(igsm_eval, "_decode", oracle)
    monkeypatch.setattr(igsm_eval, "_budget", lambda *a: 12)  # a few words: every row is cut
    model_cfg = ModelConfig(num_layers=1, num_heads=2, d_model=16, vocab_size=task.vocab_size,
                            max_len=64, pos="rotary")
    doc, rows = igsm_eval.evaluate_igsm(model_cfg, None, task,
                                        dataclasses.replace(cfg.eval, cells=("op<=3",)))
    m = doc["cells"]["op<=3"]
    assert m["accuracy"] == 1.0 and m["extended"] == 6 and m["truncated"] == 0
    P = -(-max(len(k) for k in truth) // 64) * 64  # the prompt buffer: rounded up to 64
    assert budgets == [12, 12] + [igsm_eval.MAX_TOTAL - P] * 2  # 6 rows in batches of 4
    assert all(r["extended"] for r in rows)


def test_a_cut_row_is_truncated_only_without_an_error_so_far(reference_records):
    """A row the budget cut is judged on its complete sentences: an earlier error is its first
    error (the regret detector's recall counts it); "truncated" (and a second pass) only when
    every complete sentence was right."""
    rec = reference_records("igsm/med_pq_public")[0]
    problem, sents = rec["problem"], rec["solution"][:-1].split(". ")
    head, _, old = sents[0].rpartition(" = ")
    for text, expect in ((". ".join(sents[:2]) + ". Define", True),
                         (f"{head} = {(int(old) + 1) % 23}. Define", False), ("Def", True)):
        row = igsm_eval._judged("op<=3", problem, problem, text, text, None, 3, False)
        assert igsm_eval._cut_while_right(row) is expect, text
        assert (row["error_kind"] == "truncated") is expect and not row["correct"]
        assert row["first_error"] == (None if expect else 0)


def test_stopping_without_an_answer_is_judged_not_called_truncated(reference_records):
    """EOS without an answer field: never correct, but its steps are judged (the first error is
    the real one), and it is not counted as cut off by the budget."""
    rec = reference_records("igsm/med_pq_public")[0]
    problem, solution = rec["problem"], rec["solution"]
    row = igsm_eval._judged("op<=3", problem, problem, solution, solution, None, 3, True)
    assert not row["correct"] and row["error_kind"] == "no_answer"
    sents = solution[:-1].split(". ")
    head, _, old = sents[0].rpartition(" = ")
    wrong = ". ".join([f"{head} = {(int(old) + 1) % 23}", *sents[1:]]) + "."
    row2 = igsm_eval._judged("op<=3", problem, problem, wrong, wrong, None, 3, True)
    assert not row2["correct"] and row2["error_kind"] not in ("no_answer", "truncated")
    assert row2["first_error"] == 0
    cut = igsm_eval._judged("op<=3", problem, problem, solution, solution, None, 3, False)
    assert cut["error_kind"] == "truncated"
    summary = igsm_eval.summarize([row, row2, cut], True)
    assert summary["truncated"] == 1 and summary["error_kinds"]["no_answer"] == 1


def test_a_cells_generations_do_not_depend_on_the_other_cells_listed(load_config, monkeypatch):
    """The sampling decoder's key is a function of (eval seed, cell name); a cell named twice is
    refused (its rows would be written twice)."""
    cfg = _smoke(load_config, teacher_forced=False)
    task = __import__("physics_lm.data.registry", fromlist=["build_task"]).build_task(cfg.task)
    keys: dict[str, list] = {}

    def record(model_cfg, params, prompt, prompt_len, max_new, key):
        keys.setdefault(current[0], []).append(np.asarray(jax.random.key_data(key)).tolist())
        B = len(prompt)
        return DecodeResult(jnp.asarray(prompt), jnp.asarray(prompt_len), jnp.asarray(prompt_len),
                            jnp.ones(B, bool), jnp.zeros(B))

    current = [""]
    real = igsm_eval.generate_cell

    def tagged(model_cfg, params, task_, name, ec, key, *a, **kw):
        current[0] = name
        return real(model_cfg, params, task_, name, ec, key, *a, decode=lambda *x: record(
            model_cfg, params, *x), **{k: v for k, v in kw.items() if k != "decode"})

    monkeypatch.setattr(igsm_eval, "generate_cell", tagged)
    model_cfg = ModelConfig(num_layers=1, num_heads=2, d_model=16, vocab_size=task.vocab_size,
                            max_len=64, pos="rotary")
    igsm_eval.evaluate_igsm(model_cfg, None, task, dataclasses.replace(cfg.eval,
                                                                       cells=("op<=3", "op=8")))
    first = dict(keys)
    keys.clear()
    igsm_eval.evaluate_igsm(model_cfg, None, task, dataclasses.replace(cfg.eval, cells=("op=8",)))
    assert keys["op=8"] == first["op=8"] and first["op=8"] != first["op<=3"]
    with pytest.raises(Exception, match="named twice"):
        igsm_eval.evaluate_igsm(model_cfg, None, task,
                                dataclasses.replace(cfg.eval, cells=("op=8", "op=8")))


def test_eval_mode_writes_generations_that_recount_to_the_summary(load_config, tmp_path,
                                                                  igsm_smoke_run):
    igsm_smoke_run(tmp_path)
    out = run_analysis(_smoke(load_config, "eval", control=True), tmp_path)
    doc = json.loads((tmp_path / "eval" / "igsm.json").read_text())
    rows = [json.loads(line) for line in
            (tmp_path / "eval" / "igsm_generations.jsonl").read_text().splitlines()]
    assert out["step"] == 4 and len(rows) == 2 * 2 * 6  # model + control, 2 cells, 6 each
    for model, cells in (("model", doc["cells"]), ("control", doc["control"]["cells"])):
        for name, m in cells.items():
            mine = [r for r in rows if r["model"] == model and r["cell"] == name]
            recount = igsm_eval.summarize(mine, m["in_distribution"])
            assert json.loads(json.dumps(recount)) == m, (model, name)
            assert m["accuracy"] == np.mean([r["correct"] for r in mine])
            by_op = m["by_op"]  # the cell's problems split by op, none lost
            assert sum(b["n"] for b in by_op.values()) == m["n"]
            assert sum(b["n"] * b["accuracy"] for b in by_op.values()) == sum(r["correct"]
                                                                            for r in mine)
            assert {int(op) for op in by_op} == {r["op"] for r in mine}
    pngs = ("igsm_accuracy.png", "igsm_errors.png", "igsm_token_kinds.png")
    assert all((tmp_path / "eval" / png).stat().st_size > 0 for png in pngs)
    for cells in (doc["teacher_forced"], doc["control"]["teacher_forced"]):
        assert set(cells) == {"op<=3", "op=8"}
        for table in cells.values():
            assert sum(k["tokens"] for k in table["kinds"].values()) == table["tokens"] > 0
    assert {"op<=3", "op=8"} == set(doc["cells"]) and doc["cells"]["op<=3"]["in_distribution"]
    assert not doc["cells"]["op=8"]["in_distribution"]
    assert doc["cells"]["op<=3"]["templates"] == "test"
    assert all(r["prompt"].startswith("<bos>") or r["prompt"] for r in rows)


def test_absolute_positions_past_the_context_are_refused(load_config, tmp_path):
    from physics_lm.config import ConfigError

    model = ModelConfig(num_layers=1, num_heads=2, d_model=16, vocab_size=10, max_len=64,
                        pos="absolute")
    task = from_config_dict(load_config("igsm", "smoke")).task
    with pytest.raises(ConfigError, match="absolute positions cannot go past"):
        igsm_eval._budget(model, __import__("physics_lm.data.registry", fromlist=["x"]
                                            ).build_task(task), 64, igsm_eval.IGSMEvalConfig())
