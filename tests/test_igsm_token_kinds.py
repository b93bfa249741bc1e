"""The teacher-forced loss by token kind: a hand-labelled solution, and the kinds partition the
training loss of a cell's rows."""

import math

import jax
import numpy as np
import pytest
from flax import linen as nn

from physics_lm.config import from_config_dict
from physics_lm.data.igsm import cells as cells_lib
from physics_lm.data.igsm.text.vocab import get_vocab
from physics_lm.data.registry import build_task
from physics_lm.eval import igsm_token_kinds as tk
from physics_lm.models.gpt2 import GPT2
from physics_lm.train import steps
from physics_lm.train.setup import resolve_model

SOLUTION = ("Define Bread's Beef Steak as p; so p = 3. Define Bread's Milk as B; "
            "q = p + 2 = 3 + 2 = 5; so B = q * p = 5 * 3 = 15.")
SENTENCE_KINDS = (  # the kind of every token after <solution>, sentence by sentence
    "syntax name_first name_rest name_rest name_rest syntax symbol_new syntax syntax symbol_ref "
    "syntax result_read syntax",
    "stop name_first name_rest name_rest syntax symbol_new syntax "
    "symbol_new syntax symbol_ref syntax operand syntax operand syntax operand syntax result_arith "
    "syntax syntax symbol_ref syntax symbol_ref syntax symbol_ref syntax operand syntax operand "
    "syntax result_arith syntax",
    "stop answer syntax",  # <answer> 15 <eos>
)
EXPECTED = [kind for sentence in SENTENCE_KINDS for kind in sentence.split()]


def test_a_hand_labelled_solution():
    vocab = get_vocab()
    tokens = np.asarray([vocab.encode_example("The number of each Bread's Milk equals 3.",
                                              SOLUTION, "15")])
    sol_pos = np.asarray([int(np.argmax(tokens[0] == vocab.sol_id))])
    mask = tk.solution_mask(tokens, sol_pos, vocab.eos_id)
    kinds, floor = tk.token_kinds(tokens, mask, vocab)
    assert [tk.KINDS[k] for k in kinds[0][mask[0]]] == EXPECTED
    new = kinds[0] == tk.KINDS.index("symbol_new")
    assert np.allclose(floor[0][new], [math.log(52), math.log(51), math.log(50)])
    assert not floor[0][~new].any()


def test_the_kinds_partition_the_training_loss_of_a_cell(load_config):
    cfg = from_config_dict(load_config("igsm", "smoke"))
    task = build_task(cfg.task)
    model_cfg = resolve_model(cfg.model, task)
    batch = cells_lib.cell_batch(task, 0, "op<=3", 12)
    model = GPT2(model_cfg)
    params = nn.meta.unbox(steps.init_params(model, task.seq_len, 0))
    tokens, sol_pos = jax.device_get((batch.tokens, batch.labels["sol_pos"]))
    mask = tk.solution_mask(np.asarray(tokens), np.asarray(sol_pos), get_vocab().eos_id)
    np.testing.assert_array_equal(mask, np.asarray(batch.loss_mask)[:, :-1] > 0)
    table = tk.teacher_forced(model_cfg, params, np.asarray(tokens), np.asarray(sol_pos))
    loss_sum, count = jax.device_get(steps.token_losses(model, params, batch))
    assert table["tokens"] == int(count)
    assert table["nll"] == pytest.approx(float(loss_sum) / float(count), rel=1e-4)
    kinds = table["kinds"]
    assert sum(v["tokens"] for v in kinds.values()) == table["tokens"]
    assert sum(v["share"] for v in kinds.values() if v["share"]) == pytest.approx(1.0, abs=1e-5)
    for name in ("name_first", "stop", "symbol_new", "result_arith", "answer", "syntax"):
        assert kinds[name]["tokens"] > 0, name
    assert kinds["answer"]["tokens"] == 12 and kinds["stop"]["tokens"] >= 12
    assert 0 < table["symbol_new_floor"] <= math.log(52)
