"""Membership DP (SPEC §3): agrees with every official verdict, takes any ids and lengths, and the
prefix-repair variant (SPEC §7) accepts exactly the repairable strings."""

import itertools
import json

import jax.numpy as jnp
import numpy as np
import pytest

from physics_lm.data.cfg import __main__ as cli
from physics_lm.data.cfg.grammar import load_grammar
from physics_lm.data.cfg.membership import bucket_length, check_strings, is_member
from physics_lm.data.cfg.repair import min_prefix_repairs

GRAMMARS = ("cfg3b", "cfg3f", "cfg3h", "cfg3i", "cfg3k")


@pytest.fixture(scope="module")
def samples(reference_records):
    return reference_records("cfg/samples_public")


@pytest.mark.parametrize("name", GRAMMARS)
def test_agrees_with_every_official_verdict(samples, name):
    rows = [r for r in samples if r["grammar"] == name]
    assert len(rows) == 200
    got = check_strings(load_grammar(name), [r["tokens"] for r in rows])
    want = np.array([r["in_cfg"] for r in rows])
    bad = [(r["label"], r.get("seed")) for r, g, w in zip(rows, got, want, strict=True) if g != w]
    assert not bad, f"{name}: verdicts differ from the official DP on {bad}"
    # The negatives that stayed valid are the ones a reject-everything checker would miss.
    assert got[[r["label"] == "negative" for r in rows]].sum() == sum(
        r["in_cfg"] for r in rows if r["label"] == "negative")


def test_any_ids_empty_and_too_long_are_non_members(samples):
    g = load_grammar("cfg3b")
    good = next(r["tokens"] for r in samples if r["grammar"] == "cfg3b")
    strings = [
        good,
        [],
        [0] * 10,
        [*good[:-1], g.eos_id],  # EOS inside the string
        [*good[:5], -3, *good[6:]],
        [*good[:5], 2**70, *good[6:]],  # beyond int64: must not wrap onto a terminal
        [*good[:5], 4 + 2**32, *good[6:]],  # would wrap onto terminal 4 -> 0 in int32
        good * 2,  # longer than the longest derivable string (432): False without a DP
        [1] * 5000,
    ]
    assert check_strings(g, strings).tolist() == [True] + [False] * 8
    assert len(good) * 2 > g.max_len


def test_jitted_padded_batch_matches_and_rejects_lengths_beyond_the_array(samples):
    g = load_grammar("cfg3b")
    rows = [r for r in samples if r["grammar"] == "cfg3b"][95:105]  # 5 positives, 5 negatives
    L = bucket_length(max(len(r["tokens"]) for r in rows))
    tokens = np.zeros((len(rows), L), np.int32)
    for i, r in enumerate(rows):
        tokens[i, : len(r["tokens"])] = r["tokens"]
    length = np.array([len(r["tokens"]) for r in rows], np.int32)
    got = np.asarray(is_member(g, jnp.asarray(tokens), jnp.asarray(length)))
    assert got.tolist() == [r["in_cfg"] for r in rows]
    # A length beyond the padded width cannot be checked: False, never an out-of-bounds read.
    too_long = np.asarray(is_member(g, jnp.asarray(tokens), jnp.full_like(length, L + 1)))
    assert not too_long.any()


def _flip(tokens, positions, num_sym):
    out = list(tokens)
    for p in positions:
        out[p] = out[p] % num_sym + 1
    return out


def test_prefix_repair_accepts_corrupted_prefix_and_rejects_broken_continuation(samples):
    g = load_grammar("cfg3f")
    good = [r["tokens"] for r in samples if r["grammar"] == "cfg3f" and r["label"] == "positive"]
    s = good[0]
    corrupted = _flip(s, [3, 17, 30, 44], g.num_sym)
    broken_tail = _flip(corrupted, [60], g.num_sym)
    strings = [corrupted, corrupted, broken_tail, s]
    wild = [0, 50, 50, 50]
    assert check_strings(g, strings, wildcard_prefix_lens=wild).tolist() == [
        False, True, False, True]
    # Min-plus variant: 4 flips are undone by <= 4 prefix changes; a broken tail never is.
    assert 1 <= min_prefix_repairs(g, corrupted, 50) <= 4
    assert min_prefix_repairs(g, broken_tail, 50) == np.inf
    assert min_prefix_repairs(g, s, 50) == 0 and min_prefix_repairs(g, corrupted, 0) == np.inf


def test_prefix_repair_equals_brute_force_over_prefix_substitutions(samples):
    g = load_grammar("cfg3b")
    negs = [r for r in samples if r["grammar"] == "cfg3b" and r["label"] == "negative"]
    pos = [r["tokens"] for r in samples if r["grammar"] == "cfg3b" and r["label"] == "positive"]
    k = 3
    cases = [_flip(pos[0], [1], 3), _flip(pos[1], [0, 2], 3), pos[2]]
    cases += [r["tokens"] for r in negs if r["corruption"]["type"] == "flip"][:3]
    strings, wild, brute, brute_cost = [], [], [], []
    for toks in cases:
        variants = [list(p) + toks[k:] for p in itertools.product(range(1, 4), repeat=k)]
        ok = check_strings(g, variants)
        brute.append(ok.any())
        changes = [sum(a != b for a, b in zip(v[:k], toks[:k], strict=True)) for v in variants]
        brute_cost.append(min((c for c, o in zip(changes, ok, strict=True) if o), default=np.inf))
        strings.append(toks)
        wild.append(k)
    assert check_strings(g, strings, wildcard_prefix_lens=wild).tolist() == brute
    assert [min_prefix_repairs(g, s, k) for s in strings] == brute_cost
    assert any(brute) and not all(brute)  # both outcomes are exercised


def test_verify_cli_adds_member_and_reports_bad_lines(tmp_path, samples, capsys):
    rows = [r for r in samples if r["grammar"] == "cfg3h"][98:102]
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps({"tokens": r["tokens"], "id": i}) + "\n"
                           for i, r in enumerate(rows)))
    out = tmp_path / "out.jsonl"
    assert cli.main(["verify", "--grammar", "cfg3h", "--in", str(src), "--out", str(out)]) == 0
    got = [json.loads(s) for s in out.read_text().splitlines()]
    assert [o["member"] for o in got] == [r["in_cfg"] for r in rows]
    assert [o["id"] for o in got] == [0, 1, 2, 3]
    for bad, needle in [('{"tokens": [1, 2]}\n{"tokens": [1, "x"]}\n', ':2: '),
                        ('{"tokens": [1]}\nnot json\n', ":2: not valid JSON"),
                        ('{"toks": [1]}\n', ":1: no 'tokens'")]:
        src.write_text(bad)
        assert cli.main(["verify", "--grammar", "cfg3h", "--in", str(src)]) == 2
        err = capsys.readouterr().err
        assert needle in err and str(src) in err and err.count("\n") == 1, err
    assert cli.main(["verify", "--grammar", "nope", "--in", str(src)]) == 2
    assert "nope" in capsys.readouterr().err
