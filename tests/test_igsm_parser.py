"""parse_problem rebuilds every reference problem's structure, graph and values from its text."""


import pytest

from physics_lm.data.igsm.text.parser import RNG, ProblemParseError, parse_problem

CORPORA = ("med_pq_public", "hard_pq_public", "med_retry_public", "med_retry_weak_public")


def _records(reference_records):
    return [r for corpus in CORPORA for r in reference_records(f"igsm/{corpus}")]


def test_every_reference_problem_parses_exactly(reference_records):
    n_params = 0
    for rec in _records(reference_records):
        p = parse_problem(rec["problem"])
        s = rec["structure"]
        assert p.answer == rec["answer_int"]
        assert p.n_op == rec["op"]
        assert p.name(p.question) == rec["question_param"]
        assert (p.question[0] == 0) == (rec["question_kind"] == "instance")
        assert list(p.categories) == s["categories"]
        assert len(p.statements) == rec["n_problem_sentences"] == len(s["edges"])
        for mine, theirs in zip(p.items, s["items"], strict=True):
            assert set(mine) <= set(theirs)
        # The only items the text cannot show: top-layer items without children (SPEC §17).
        for layer, (mine, theirs) in enumerate(zip(p.items, s["items"], strict=True)):
            hidden = set(theirs) - set(mine)
            assert not hidden or layer == 0
            parents = {(e[0], e[1]) for e in s["edges"]}
            assert all((0, theirs.index(h)) not in parents for h in hidden)
        assert {p.name(q) for q in p.necessary} == {
            n for n, r in rec["params"].items() if r["necessary"]
        }
        assert {p.name(q) for q in p.necessary} == set(rec["solution_params"])
        for name, r in rec["params"].items():
            q = p.name_to_param[name]
            assert p.values[q] == r["value"], name
            deps = [p.name(d) if d != RNG else "RNG" for d in p.deps[q]]
            assert sorted(deps) == sorted(r["deps"]), name
            if r["kind"] == "instance":  # operand order is the sentence order
                assert [d for d in deps if d != "RNG"] == [d for d in r["deps"] if d != "RNG"]
            n_params += 1
        unnecessary = {
            q
            for q in p.all_param
            if p.exists(q) and q not in p.necessary and (q[0] == 0 or p.name(q) in rec["params"])
        }
        assert len(unnecessary) == rec["n_unnecessary_params"]
    assert n_params > 7000


def test_all_param_layout():
    text = (
        "The number of each Penguin Beach's Giraffe equals 6. The number of each Octopus Den's "
        "Leopard equals each Octopus Den's Giraffe. The number of each Rockpool Exhibit's Leopard "
        "equals 20 more than the sum of each Octopus Den's Giraffe and each Octopus Den's Leopard. "
        "The number of each Rockpool Exhibit's Giraffe equals 8 times as much as the sum of each "
        "Octopus Den's Giraffe and each Octopus Den's Leopard. The number of each Octopus Den's "
        "Giraffe equals 21. How many Animal does Penguin Beach have?"
    )
    p = parse_problem(text)
    assert p.items == (("Penguin Beach", "Octopus Den", "Rockpool Exhibit"), ("Giraffe", "Leopard"))
    assert len(p.all_param) == 3 * 2 + 3  # instance pairs, then one abstract per upper item
    assert p.all_param[:2] == ((0, 0, 0, 0), (0, 0, 0, 1)) and p.all_param[-1] == (1, 0, 2, 1)
    assert not p.exists((0, 0, 0, 1))  # Penguin Beach has no Leopard edge
    assert p.answer == 6 and p.n_op == 2
    assert p.values[(0, 0, 2, 1)] == (20 + 21 + 21) % 23


@pytest.mark.parametrize(
    "text",
    [
        "",
        "The number of each Penguin Beach's Giraffe equals 6. "
        "How many Leopard does Penguin Beach have?",  # asks about a pair that is not an edge
        "The number of each Penguin Beach's Giraffe equals 6.",  # no question
        "The number of each Penguin Beach's Giraffe equals 25. "
        "How many Animal does Penguin Beach have?",  # 25 is not a number mod 23
        "The number of each Foo's Giraffe equals 6. How many Animal does Foo have?",
        "The number of each Penguin Beach's Giraffe equals each Penguin Beach's Giraffe. "
        "How many Giraffe does Penguin Beach have?",  # cyclic
    ],
)
def test_malformed_problems_raise_parse_error(text):
    with pytest.raises(ProblemParseError):
        parse_problem(text)


def test_awkward_names_and_question_first():
    text = (
        "How many Gym Backpack does Golf Practice Area have? "
        "The number of each Track and Field's Gym Backpack equals 3. "
        "The number of each Golf Practice Area's Gym Backpack equals the sum of each Track and "
        "Field's Gym Backpack and each Track and Field's Backpack."
    )
    p = parse_problem(text)
    assert p.items == (("Track and Field", "Golf Practice Area"), ("Gym Backpack",))
    assert p.answer == 6 and p.name(p.question) == "Golf Practice Area's Gym Backpack"
    # Popcorn is both a Product and an Ingredient; Marc's gets a blind possessive.
    text = (
        "The number of each Marc's's Popcorn equals 2. The number of each Popcorn's Popcorn equals "
        "5. The number of each Cookies's Popcorn equals 7 times as much as each Marc's's Popcorn. "
        "How many Ingredient does Marc's have?"
    )
    p = parse_problem(text)
    assert p.categories == ("Supermarket", "Product", "Ingredient")
    assert p.items == (("Marc's",), ("Popcorn", "Cookies"), ("Popcorn",))
    assert p.answer == 2 * 5
    assert p.values[p.name_to_param["Cookies's Popcorn"]] == 14
