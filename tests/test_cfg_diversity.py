"""Subtree diversity (eval/cfg_diversity.py) and the parser behind it (data/cfg/parse.py)."""

import numpy as np
import pytest

from physics_lm.data.cfg.grammar import Grammar, load_grammar
from physics_lm.data.cfg.parse import parse_spans, spans_to_tree
from physics_lm.data.cfg.reference import labels_from_tree, sample_reference, tree_rules
from physics_lm.eval.cfg_diversity import birthday, subtree_diversity

# root -> A B | B A;  A -> 1 1 | 2;  B -> 3
TOY = Grammar("toy", 2, 3, (1, 2, 3), ((((0, 1), (1, 0)),), (((0, 0), (1,)), ((2,),))))


def test_birthday_estimate_on_a_known_multiset():
    got = birthday(["a", "a", "b", "c", "c", "c"])
    assert (got["n"], got["distinct"], got["collisions"]) == (6, 3, 1 + 3)
    assert got["support_estimate"] == pytest.approx(15 / 4) and got["support_lower_bound"] is None
    none = birthday(["a", "b", "c", "d"])  # no collision: only an order of magnitude
    assert none["support_estimate"] is None and none["support_lower_bound"] == 6
    assert birthday([])["distinct"] == 0


def test_subtree_counts_on_known_strings():
    generated = [[1, 1, 3], [2, 3], [3, 2], [1, 1, 3], [3, 1, 1], [1, 3]]  # the last: no member
    truth = [[2, 3], [3, 2], [3, 1, 1], [2, 3], [1, 1, 3], [3, 2], [3, 2]]
    out = subtree_diversity(TOY, generated, truth)
    assert out["n_strings"] == out["n_truth_strings"] == 5  # truth cut to as many strings
    root, (a, b) = out["levels"][0]["nts"][0], out["levels"][1]["nts"]
    assert (root["generated"]["distinct"], root["generated"]["collisions"]) == (4, 1)
    assert (a["generated"]["n"], a["generated"]["distinct"], a["generated"]["collisions"]) == (
        5, 2, 3 + 1)  # 11, 2, 2, 11, 11
    assert (b["generated"]["distinct"], b["generated"]["collisions"]) == (1, 10)
    assert (root["truth"]["distinct"], a["truth"]["distinct"]) == (4, 2)  # 23 32 311 23 113
    assert a["truth"]["collisions"] == 1 + 3  # 2 2 2 | 11 11
    assert out["distinct_generated"] == [4, 3] and out["distinct_truth"] == [4, 3]
    assert out["distinct_ratio"] == 1.0


def test_parser_finds_a_derivation_and_rejects_non_members():
    """cfg3b is unambiguous: the parse is the generating tree. On cfg3f (ambiguous) the parse
    may differ from it but must use grammar rules and yield the string; a flipped token
    leaves no parse."""
    for name, same in (("cfg3b", True), ("cfg3f", False)):
        g = load_grammar(name)
        for seed in range(4):
            ref = sample_reference(g, seed)
            tree = spans_to_tree(parse_spans(g, ref.tokens))
            tree_rules(g, tree)  # raises if a node uses no rule
            tok, anc, bnd = labels_from_tree(tree)
            assert tok.tolist() == ref.tokens
            if same:
                for got, want in zip((anc, bnd), labels_from_tree(ref.tree)[1:], strict=True):
                    np.testing.assert_array_equal(got, want)
    assert parse_spans(g, ref.tokens[:-1]) is None and parse_spans(g, []) is None
