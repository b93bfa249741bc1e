"""Part 2.1 probe labels, checked against the official retry generator's own choices."""


import numpy as np

from physics_lm.data.igsm.text.parser import RNG, parse_problem
from physics_lm.data.igsm.text.probe_labels import (
    pair_labels,
    row_labels,
    sentence_end_positions,
)
from physics_lm.data.igsm.text.vocab import get_vocab


def _back_params(problem, solution):
    """(row, param) of every BACK sentence: the row is the number of real sentences before it."""
    row, out = 0, []
    for sent in solution[:-1].split(". "):
        if sent.endswith(" as BACK"):
            out.append((row, problem.name_to_param[sent[len("Define ") : -len(" as BACK")]]))
        else:
            row += 1
    return out


def test_retry_candidates_match_can_next(reference_records):
    """The official 'retry' generator inserts only existing, undefined, not-computable params."""
    n = 0
    for rec in reference_records("igsm/med_retry_public"):
        p = parse_problem(rec["problem"])
        labels = row_labels(p, rec["solution"])
        assert not labels.truncated and len(labels.defined) == rec["n_solution_params"]
        for row, q in _back_params(p, rec["solution"]):
            i = p.param_index[q]
            assert labels.exists[i] and not labels.known[row, i] and not labels.can_next[row, i]
            n += 1
    assert n == sum(r["n_back"] for r in reference_records("igsm/med_retry_public"))


def test_retry_weak_candidates_are_necessary_and_unknown(reference_records):
    for rec in reference_records("igsm/med_retry_weak_public"):
        p = parse_problem(rec["problem"])
        labels = row_labels(p, rec["solution"])
        later = set(labels.defined)
        for row, q in _back_params(p, rec["solution"]):
            i = p.param_index[q]
            assert labels.nece[row, i] and not labels.known[row, i] and q in later


def test_rows_along_the_reference_solutions(reference_records):
    for rec in reference_records("igsm/hard_pq_public")[:100]:
        p = parse_problem(rec["problem"])
        lab = row_labels(p, rec["solution"])
        names = [p.name(q) for q in lab.defined]
        assert names == rec["solution_params"]
        assert lab.sentences == (-1, *range(len(names)))
        assert lab.stack().shape == (len(names) + 1, len(p.all_param), 5)
        nece = {p.name(q) for q, x in zip(p.all_param, lab.nece[0], strict=True) if x}
        assert nece == set(rec["solution_params"])
        for r, q in enumerate(lab.defined):
            i = p.param_index[q]
            assert lab.can_next[r, i] == lab.nece_next[r, i] == 1  # computable just before
            assert lab.known[r, i] == 0 and lab.known[r + 1, i] == 1
            assert lab.value[r, i] == 23 and lab.value[r + 1, i] == p.values[q]
            assert lab.can_next[r + 1, i] == 0
        assert (np.diff(lab.known, axis=0) >= 0).all()
        # The official quirk: pairs without an edge have no dependency, so are always can_next.
        assert (lab.can_next[:, ~lab.exists] == 1).all()
        assert lab.value[-1][lab.known[-1] == 0].tolist() == [23] * int((lab.known[-1] == 0).sum())


def test_pair_labels(reference_records):
    for rec in reference_records("igsm/med_pq_public")[:50]:
        p = parse_problem(rec["problem"])
        pairs = pair_labels(p)
        qi = p.param_index[p.question]
        ancestors = {p.all_param[j] for j in np.flatnonzero(pairs["dep"][qi])}
        assert ancestors == set(p.necessary) - {p.question}
        for a in p.all_param:
            direct = {p.all_param[j] for j in np.flatnonzero(pairs["neighbor"][p.param_index[a]])}
            assert direct == set(p.deps[a]) - {RNG}
        assert not np.diag(pairs["dep"]).any()


def test_wrong_solution_is_cut_and_rows_map_to_tokens(reference_records):
    rec = next(r for r in reference_records("igsm/med_pq_public") if r["n_solution_params"] >= 4)
    p = parse_problem(rec["problem"])
    sents = rec["solution"][:-1].split(". ")
    head, _, old = sents[1].rpartition(" = ")
    bad = ". ".join([sents[0], f"{head} = {(int(old) + 1) % 23}", *sents[2:]]) + "."
    lab = row_labels(p, bad)
    assert lab.truncated and len(lab.defined) == 1
    assert len(row_labels(p).defined) == 0 and row_labels(p).nece.shape[0] == 1
    vocab = get_vocab()
    ids = vocab.encode_example(rec["problem"], rec["solution"], rec["answer"])
    start, ends = sentence_end_positions(ids, vocab)
    assert ids[start] == vocab.sol_id and len(ends) == len(sents)
    assert (
        all(ids[e] == vocab.word_to_id(".") for e in ends)
        and ends[-1] == ids.index(vocab.ans_id) - 1
    )
