"""Evaluation cells and the reask set: the paper's cells per preset, test bins only, a cell is a
pure function of (eval seed, cell), and reask rows are faithful problems (parsed, their own
solution judged correct and shortest) that ask another parameter with a varying op.

Two cells are compiled (med reask and med op=20, ~1 min each on 2 cores); the rest reuses them.
"""

from __future__ import annotations

import json

import jax
import numpy as np
import pytest
from test_igsm_sampler import FAST, _check_rows, _texts

from physics_lm.data.igsm.cells import REASK, SEEN, cell_batch, cell_key, eval_cells
from physics_lm.data.igsm.task import IGSMTask
from physics_lm.data.igsm.text.sketch import host_bin, sketch_text

MED = IGSMTask("med", seq_len=768)  # a training task: its cells are what we evaluate it on
TEST_BINS = tuple(range(16, 23))
N = 16


def _batch(name: str, seed: int = 0):
    return jax.tree.map(np.asarray, cell_batch(MED, seed, name, N, FAST))


@pytest.fixture(scope="module")
def reask():
    return _batch(REASK)


@pytest.fixture(scope="module")
def ood():
    return _batch("op=20")


@pytest.mark.parametrize("task, names, first_ood", [
    (MED, ["op<=15", "op=15", "op=20", "op=21", "op=22", "op=23", "reask"], 20),
    (IGSMTask("hard", seq_len=1024, split="all"),
     ["op<=21", "op=21", "op=28", "op=29", "op=30", "op=31", "op=32", "reask"], 28),
    (IGSMTask("custom", max_op=6, max_edge=10, seq_len=512, groups=4, pool=64),
     ["op<=6", "op=6", "op=11", "op=12", "op=13", "op=14", "reask"], 11),
])
def test_cells_are_the_papers(task, names, first_ood):
    cells = eval_cells(task)
    assert list(cells) == names
    top = task.resolved_max_op
    for name, cell in cells.items():
        assert cell.split == "test" and cell.bins == TEST_BINS, name
        assert cell.seq_len >= max(task.seq_len, cell.min_seq_len), name
        assert (cell.groups, cell.pool) == (1, 0), name
        assert (cell.preset, cell.resolved_max_op, cell.fmt) == (task.preset, top, task.fmt)
        assert cell.reask == (name == REASK)
        want = None if name.startswith("op<=") else first_ood if name == REASK else int(name[3:])
        assert cell.op == want, name


def test_a_task_from_json_lists_keys_the_same_caches():
    """A config read back from JSON gives train_bins as a list: the task (and its cells, which
    key compiled samplers) must still hash, and equal the tuple form."""
    listed = IGSMTask("custom", max_op=4, max_edge=6, seq_len=320, train_bins=list(range(16)))
    tupled = IGSMTask("custom", max_op=4, max_edge=6, seq_len=320)
    assert listed == tupled and hash(listed) == hash(tupled)
    assert all(hash(c) == hash(eval_cells(tupled)[n]) for n, c in eval_cells(listed).items())


def test_cell_keys_are_pure_and_distinct():
    names = list(eval_cells(MED))
    keys = [tuple(np.asarray(cell_key(s, n)).tolist()) for s in (0, 1) for n in names]
    assert len(set(keys)) == len(keys)
    np.testing.assert_array_equal(cell_key(3, "op=21"), cell_key(3, "op=21"))
    with pytest.raises(ValueError, match="cell: unknown name 'op=99'"):
        cell_batch(MED, 0, "op=99", N)


def test_reask_rows_are_correct_and_shortest(reask):
    _check_rows(reask, range(N), "pq")


def test_reask_asks_another_parameter_with_its_own_op_and_bin(reask):
    lab = reask.labels
    assert (lab["question_slot"] != lab["orig_question_slot"]).all()
    assert (lab["orig_op"] == 20).all() and len(set(lab["op"].tolist())) > 2, lab["op"]
    assert set(lab["template_bin"].tolist()) <= set(TEST_BINS)
    for b in range(N):  # the split is decided on the solution the row shows
        assert lab["template_bin"][b] == host_bin(sketch_text(_texts(reask, b)[2]))


def test_ood_cell_has_its_op_and_test_bins(ood):
    assert set(ood.labels["op"].tolist()) == {20}
    assert set(ood.labels["template_bin"].tolist()) <= set(TEST_BINS)
    _check_rows(ood, range(0, N, 4), "pq")


def test_a_cell_is_a_pure_function_of_seed_and_cell(reask, ood):
    np.testing.assert_array_equal(_batch(REASK).tokens, reask.tokens)  # cached compile
    other_seed = _batch(REASK, seed=1)
    assert _texts(other_seed, 0)[0] != _texts(reask, 0)[0]
    assert {_texts(ood, b)[0] for b in range(N)}.isdisjoint(_texts(reask, b)[0] for b in range(N))


def test_reask_settings():
    assert IGSMTask("hard", reask=True, seq_len=4096).op == 28
    assert IGSMTask("custom", max_op=6, max_edge=10, reask=True, seq_len=4096).op == 11
    task = IGSMTask("med", reask=True, op=21, split="test", seq_len=4096)
    d = json.loads(json.dumps(task.describe()))
    assert d["reask"] and d["name"] == "igsm_med_op21_reask_pq_test"
    assert task.min_seq_len > IGSMTask("med", op=21, seq_len=4096).min_seq_len
    with pytest.raises(ValueError, match="seq_len"):
        IGSMTask("med", reask=True, seq_len=1024)


def test_seen_cells_draw_the_training_template_bins_only_when_asked():
    task = IGSMTask("custom", max_op=4, max_edge=6, seq_len=320)
    assert not any(n.startswith(SEEN) for n in eval_cells(task))
    cells = eval_cells(task, seen=True)
    assert cells["seen:op<=4"].bins == tuple(range(16)) and cells["seen:op=4"].op == 4
    seen = jax.tree.map(np.asarray, cell_batch(task, 0, "seen:op<=4", N, FAST))
    assert set(seen.labels["template_bin"].tolist()) <= set(range(16))
    for b in range(N):
        assert seen.labels["template_bin"][b] == host_bin(sketch_text(_texts(seen, b)[2]))
