"""iGSM evaluation: the plumbing judges the sampler's own solutions correct (an oracle decoder),
and every number of eval/igsm.json is a recount of eval/igsm_generations.jsonl."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from physics_lm.analysis import run_analysis
from physics_lm.config import ModelConfig, from_config_dict
from physics_lm.data.igsm import cells as cells_lib
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
