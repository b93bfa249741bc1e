"""CFGTask: row layout, loss mask, labels, corruption and config validation."""

import json

import jax
import numpy as np
import pytest

from physics_lm.data.cfg import reference as ref
from physics_lm.data.cfg.grammar import load_grammar
from physics_lm.data.cfg.task import CFGTask, corrupt_tokens

KEY = jax.random.key(7)


@pytest.fixture(scope="module")
def noisy():
    """One packed cfg3b batch with half the strings perturbed (one compile for several tests)."""
    task = CFGTask("cfg3b", seq_len=512, packing="pack", corrupt_frac=0.5, corrupt_rate=0.3)
    return task, jax.device_get(task.sample(KEY, 8))


def _repair(g, tokens, anc_DxL, bnd_DxL, wild):
    """Fills wildcard (corrupted) leaves from the rule of their parent that matches the rest."""
    tree = ref.tree_from_labels(tokens, anc_DxL, bnd_DxL)
    D, fixed = g.depth, tokens.copy()
    for k, j in enumerate(tree.sym[D - 1]):
        idx = np.flatnonzero(tree.parent[D] == k)
        fits = [r for r in g.rules[D - 1][j] if len(r) == len(idx) and all(
            wild[i] or r[t] == tokens[i] - 1 for t, i in enumerate(idx))]
        assert fits, f"leaf node {k}: no rule of {j} matches the uncorrupted tokens"
        fixed[idx] = np.asarray(fits[0]) + 1
        if len(fits) == 1:  # the original leaf is known: a replaced token must differ from it
            assert (fixed[idx][wild[idx]] != tokens[idx][wild[idx]]).all()
    return fixed


def _segments(tokens_T, bos, eos):
    """(start, end) of every BOS..EOS string in a row; end is None for a string cut at T."""
    starts = np.flatnonzero(tokens_T == bos)
    out = []
    for s in starts:
        e = np.flatnonzero(tokens_T[s:] == eos)
        out.append((s, s + e[0] if len(e) else None))
    return out


def _check_rows(task, batch, expect_full):
    g = load_grammar(task.grammar)
    B, T = batch.tokens.shape
    lab = batch.labels
    assert batch.tokens.dtype == np.int32 and batch.loss_mask.dtype == np.float32
    assert lab["nt_ancestor"].shape == lab["nt_boundary"].shape == (B, T, g.depth)
    is_tok = (batch.tokens >= 1) & (batch.tokens <= g.num_sym)
    # -1 exactly at non-terminals; real labels in range at terminals.
    assert ((lab["nt_ancestor"][..., 0] == -1) == ~is_tok).all()
    assert ((lab["nt_boundary"][..., 0] == -1) == ~is_tok).all()
    # Loss mask: predict every terminal and EOS, never BOS or pad; last column 0.
    nxt = batch.tokens[:, 1:]
    want = ((nxt >= 1) & (nxt <= g.num_sym)) | (nxt == g.eos_id)
    np.testing.assert_array_equal(batch.loss_mask[:, :-1], want.astype(np.float32))
    assert (batch.loss_mask[:, -1] == 0).all()
    assert (batch.tokens[:, 0] == g.bos_id).all()
    pad = batch.tokens == g.pad_id
    assert ((lab["string_id"] == -1) == pad).all()
    np.testing.assert_array_equal(lab["n_pad"], pad.sum(1))
    if expect_full:
        assert not pad.any()
    for b in range(B):
        segs = _segments(batch.tokens[b], g.bos_id, g.eos_id)
        assert [lab["string_id"][b, s] for s, _ in segs] == list(range(len(segs)))
        for s, e in segs:
            e_ = T if e is None else e
            assert is_tok[b, s + 1 : e_].all()
            if e is None:
                continue  # a cut string is not a full derivation
            tok, wild = batch.tokens[b, s + 1 : e], lab["corrupted"][b, s + 1 : e] == 1
            anc_DxL = lab["nt_ancestor"][b, s + 1 : e].T
            bnd_DxL = lab["nt_boundary"][b, s + 1 : e].T
            if lab["string_corrupted"][b, s]:  # labels are the clean tree's: repair the leaves
                tok = _repair(g, tok, anc_DxL, bnd_DxL, wild)
            else:
                assert not wild.any()
            ref.tree_rules(g, ref.tree_from_labels(tok, anc_DxL, bnd_DxL))


def test_pack_rows_are_bos_string_eos_cut_at_seq_len(noisy):
    task, batch = noisy
    assert task.n_strings == 4  # min(ceil(512 / 140), ceil(512 / 277.6) + 2)
    assert batch.tokens.shape == (8, 512)
    _check_rows(task, batch, expect_full=True)
    assert (batch.labels["overflow"] == 0).all()


def test_corruption_flips_only_flagged_tokens_of_perturbed_strings(noisy):
    task, batch = noisy
    g = load_grammar(task.grammar)
    lab = batch.labels
    is_tok = (batch.tokens >= 1) & (batch.tokens <= g.num_sym)
    assert ((lab["corrupted"] == 1) <= (lab["string_corrupted"] == 1)).all()
    assert (lab["corrupted"][~is_tok] == 0).all()
    in_pert = (lab["string_corrupted"] == 1) & is_tok
    rate = lab["corrupted"][in_pert].mean()
    assert 0.25 < rate < 0.35, rate  # ~1000 tokens: 0.3 +- 0.015 per s.e.
    starts = batch.tokens == g.bos_id
    assert 0 < lab["string_corrupted"][starts].sum() < starts.sum()
    # _check_rows repairs perturbed strings from their (clean) labels: see _repair.


def test_single_rows_keep_the_first_fitting_candidate_or_flag_overflow():
    task = CFGTask("cfg3b", seq_len=300, packing="single", strings_per_row=2)
    g = load_grammar("cfg3b")
    batch = jax.device_get(task.sample(KEY, 48))
    _check_rows(task, batch, expect_full=False)
    over = batch.labels["overflow"] == 1
    has_eos = (batch.tokens == g.eos_id).any(1)
    np.testing.assert_array_equal(has_eos, ~over)
    assert over.any() and not over.all()  # P(len > 298) ~ 0.3 -> both candidates ~ 0.09
    assert (batch.tokens[over] != g.pad_id).all()  # a cut string fills the row
    assert ((batch.tokens == g.bos_id).sum(1) == 1).all()
    assert (batch.labels["string_id"] <= 0).all()
    again = jax.device_get(task.sample(KEY, 48))
    np.testing.assert_array_equal(again.tokens, batch.tokens)


def test_corrupt_tokens_replaces_with_a_different_uniform_terminal():
    tok = jax.random.randint(jax.random.key(0), (64, 100), 1, 4)
    length = np.full((64,), 80)
    new, rep = jax.device_get(corrupt_tokens(jax.random.key(1), tok, length, 1.0, 3))
    tok = np.asarray(tok)
    assert (rep[:, :80] == 1).all() and (rep[:, 80:] == 0).all()
    assert (new[:, :80] != tok[:, :80]).all() and (new[:, 80:] == tok[:, 80:]).all()
    shift = (new[:, :80] - tok[:, :80]) % 3
    assert abs((shift == 1).mean() - 0.5) < 0.03  # both other terminals equally likely
    new0, rep0 = corrupt_tokens(jax.random.key(1), tok, length, 0.0, 3)
    assert (np.asarray(new0) == tok).all() and not np.asarray(rep0).any()


@pytest.mark.parametrize(("kwargs", "needles"), [
    ({"grammar": "cfg9z"}, ["grammar", "'cfg9z'", "cfg3b"]),
    ({"packing": "stack"}, ["packing", "'stack'"]),
    ({"corrupt_frac": 1.5}, ["corrupt_frac", "1.5"]),
    ({"corrupt_rate": -0.1}, ["corrupt_rate", "-0.1"]),
    ({"packing": "single", "seq_len": 100}, ["seq_len", "100"]),
    ({"seq_len": 1}, ["seq_len", "1"]),
    ({"strings_per_row": -2}, ["strings_per_row", "-2"]),
])
def test_bad_config_names_the_field_and_value(kwargs, needles):
    with pytest.raises(ValueError) as e:
        CFGTask(**kwargs)
    for n in needles:
        assert n in str(e.value)


def test_task_attributes_and_describe():
    task = CFGTask("cfg3k", seq_len=1024, packing="single")
    g = load_grammar("cfg3k")
    assert (task.vocab_size, task.bos_id, task.eos_id, task.pad_id) == (
        g.vocab_size, g.bos_id, g.eos_id, 0)
    assert task.n_strings == 4  # max_len 1458 > 1022: a string can overflow
    d = json.loads(json.dumps(task.describe()))
    assert d["grammar"] == "cfg3k" and d["seq_len"] == 1024 and d["packing"] == "single"
    assert d["name"] == task.name and d["vocab_size"] == g.vocab_size
    assert CFGTask("cfg3b", packing="single").n_strings == 1  # 432 + 2 <= 512: never overflows
