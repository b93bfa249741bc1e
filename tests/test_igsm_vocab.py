"""Name tables and the word-level vocabulary of iGSM."""

from collections import Counter

import pytest

from physics_lm.data.igsm.text import names
from physics_lm.data.igsm.text.vocab import get_vocab

CORPORA = ("med_pq_public", "hard_pq_public", "med_retry_public", "med_retry_weak_public")


def _records(reference_records):
    return [r for corpus in CORPORA for r in reference_records(f"igsm/{corpus}")]


def test_name_table_counts_match_spec():
    assert names.CHAINS == (
        ("District", "Supermarket", "Product", "Ingredient"),
        ("Zoo", "Enclosure", "Animal", "Bone"),
        ("School", "Classroom", "Backpack", "Stationery"),
        ("Ecosystems", "Creatures", "Organs", "Cells"),
    )
    pools = [p for cat in names.CATEGORIES for p in names.POOLS[cat]]
    assert all(len(names.POOLS[c]) == 5 for c in names.CATEGORIES)
    assert len(pools) == 80
    assert sum(map(len, pools)) == 1553
    assert len(names.all_item_names()) == 1516
    assert sorted(Counter(map(len, pools)).items()) == [
        (12, 2),
        (14, 1),
        (15, 2),
        (16, 2),
        (18, 3),
        (19, 1),
        (20, 69),
    ]
    distinct = {c: len(names.category_items(c)) for c in names.CATEGORIES}
    assert distinct == {
        "District": 100,
        "Supermarket": 97,
        "Product": 97,
        "Ingredient": 100,
        "Zoo": 100,
        "Enclosure": 100,
        "Animal": 100,
        "Bone": 61,
        "School": 100,
        "Classroom": 100,
        "Backpack": 100,
        "Stationery": 100,
        "Ecosystems": 100,
        "Creatures": 100,
        "Organs": 91,
        "Cells": 93,
    }
    assert all(len(set(p)) == len(p) for p in pools)  # sampling without replacement needs this
    assert not any("." in n for n in names.all_item_names())


def test_every_corpus_name_is_in_the_table(reference_records):
    items = names.all_item_names()
    n = 0
    for rec in _records(reference_records):
        s = rec["structure"]
        assert all(c in names.CATEGORIES for c in s["categories"])
        for cat, layer in zip(s["categories"], s["items"], strict=True):
            assert set(layer) <= names.category_items(cat) <= items
            n += len(layer)
    assert n > 4000


def test_vocab_ids_are_fixed():
    v = get_vocab()
    assert v.size == 1703  # 9 specials + the 1,694 word types of SPEC §21
    assert v.pad_id == 0
    assert [v.words[i] for i in v.number_ids] == [str(i) for i in range(23)]
    assert v.number_ids == list(range(9, 32))
    assert "".join(v.words[i] for i in v.letter_ids) == (
        "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
    )
    assert v.words[v.back_id] == "BACK"
    specials = [v.bos_id, v.eos_id, v.prob_id, v.sol_id, v.ans_id, v.start_id, v.end_id, v.mid_id]
    assert len(set(specials)) == 8 and max(specials) < 9
    assert v.word_to_id("Define") == v.encode("Define")[0]
    assert v.words[-4:] == ("by", "coli", "de", "in")  # sorted tail: if this moves, ids moved


def test_round_trip_on_every_reference_text(reference_records):
    v = get_vocab()
    n = 0
    for rec in _records(reference_records):
        for key in ("problem", "question", "solution", "answer", "solution_clean"):
            if key in rec:
                assert v.decode(v.encode(rec[key])) == rec[key]
                n += 1
        ids = v.encode_example(rec["problem"], rec["solution"], rec["answer"])
        assert ids[0] == v.bos_id and ids[-1] == v.eos_id
        assert v.split_example(ids) == (rec["problem"], rec["solution"], rec["answer"])
        assert v.encode(v.decode(ids)) == ids
    assert n == 600 * 4 + 60 * 5


@pytest.mark.parametrize(
    "text",
    [
        "Define Marc's's Soy Milk as Q; so Q = 2.",
        "How many Product does Sainsbury's have?",
        "The number of each Shop 'n Save's Food 4 Less equals 5.",
        "Zoo Zürich's Insectarium de Montréal, Ibirapuera Park in São Paulo and Track and Field",
        "each Caudal Vertebrae 12's B Cells equals E coli's T Cells",
        "Define Yeast's Organs as BACK.",
    ],
)
def test_round_trip_awkward_names(text):
    v = get_vocab()
    assert v.decode(v.encode(text)) == text


def test_every_name_encodes_and_possessive_composes():
    v = get_vocab()
    for cat in names.CATEGORIES:
        for name in [cat, *names.category_items(cat)]:
            ids = v.encode_name(name)
            assert v.decode(ids) == name
            assert v.encode(f"{name}'s") == [*ids, v.word_to_id("'s")]


def test_tokenisation_splits_punctuation_and_possessive():
    v = get_vocab()
    assert [v.words[i] for i in v.encode("Marc's's Soy Milk equals 6.")] == [
        "Marc",
        "'s",
        "'s",
        "Soy",
        "Milk",
        "equals",
        "6",
        ".",
    ]
    assert v.decode([0, *v.encode("so e = 6."), 0]) == "so e = 6."


@pytest.mark.parametrize(
    "text,match",
    [
        ("The Blorp equals 6.", r"unknown word 'Blorp' at character 4"),
        ("so e  = 6.", "empty word at character 5"),
        (" so e = 6.", "empty word at character 0"),
        ("so e = 6 .", "stands alone"),
        ("so e = 25.", "unknown word '25'"),
    ],
)
def test_encode_errors_name_word_and_position(text, match):
    with pytest.raises(ValueError, match=match):
        get_vocab().encode(text)


def test_word_to_id_unknown_raises():
    with pytest.raises(KeyError, match="Blorp"):
        get_vocab().word_to_id("Blorp")


def test_encode_inverts_decode_on_random_ids():
    import random

    v = get_vocab()
    rng = random.Random(0)
    for _ in range(2000):
        ids = [rng.randrange(1, v.size) for _ in range(rng.randrange(1, 12))]
        if rng.random() < 0.3:  # attached tokens and specials are the hard cases
            ids += [rng.choice(sorted(v.attached_ids | v.special_ids - {v.pad_id}))]
        assert v.encode(v.decode(ids)) == ids, [v.words[i] for i in ids]
