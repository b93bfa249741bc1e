"""`build_random_grammar`: the paper's builder knobs, seeded; every grammar it builds samples
strings that pass membership (and a string off the grammar does not)."""

import jax
import pytest

from physics_lm.data.cfg import membership
from physics_lm.data.cfg.grammar import build_random_grammar
from physics_lm.data.cfg.sampler import sample_strings

KNOBS = [
    dict(sizes=(1, 3, 3, 3, 3), deg_min=2, deg_max=4, len_min=2, len_max=3),  # cfg3-like, depth 4
    dict(sizes=(1, 2, 3, 4), deg_min=1, deg_max=2, len_min=1, len_max=3),
    dict(sizes=(1, 3, 4, 4), deg_min=3, deg_max=3, len_min=2, len_max=2,
         disallow_duplicate_sym=True),
]


@pytest.mark.parametrize("knobs", KNOBS, ids=["cfg3like", "short", "nodup"])
def test_random_grammar_follows_its_knobs_and_samples_members(knobs):
    g = build_random_grammar(7, **knobs)
    assert g == build_random_grammar(7, **knobs)  # a pure function of the seed
    assert g != build_random_grammar(8, **knobs)
    assert g.sizes == knobs["sizes"] and g.depth == len(knobs["sizes"]) - 1
    for l, level in enumerate(g.rules):
        assert len(level) == knobs["sizes"][l]
        rhs = [r for rules in level for r in rules]
        assert len(set(rhs)) == len(rhs)  # no right-hand side twice on a level
        for rules in level:
            assert knobs["deg_min"] <= len(rules) <= knobs["deg_max"]
            for r in rules:
                assert knobs["len_min"] <= len(r) <= knobs["len_max"]
                assert all(0 <= c < knobs["sizes"][l + 1] for c in r)
                if knobs.get("disallow_duplicate_sym"):
                    assert len(set(r)) == len(r)
    s = jax.device_get(sample_strings(jax.random.key(0), g, 16))
    strings = [s.tokens[i, : s.length[i]].tolist() for i in range(16)]
    assert all(len(x) > 0 for x in strings)
    assert membership.check_strings(g, strings).all()
    # A string the grammar cannot derive: longer than the longest it can build.
    too_long = [1] * (max(knobs["len_max"] ** g.depth, 1) + 1)
    assert not membership.check_strings(g, [too_long]).any()


def test_random_grammar_rejects_impossible_knobs():
    with pytest.raises(ValueError, match="deg_min"):
        build_random_grammar(0, deg_min=3, deg_max=2)
    with pytest.raises(ValueError, match="too small for distinct rules"):
        build_random_grammar(0, sizes=(1, 1, 1), deg_min=4, deg_max=4, len_min=1, len_max=1)
