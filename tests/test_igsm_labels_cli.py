"""`python -m physics_lm.data.igsm labels`: probe labels by parameter name, along the given
solution or (none given) a shortest one."""

import json

from physics_lm.data.igsm.__main__ import main


def _check(rec: dict, out: dict, along_given: bool) -> None:
    names = out["params"]
    assert len(set(names)) == len(names) == len(out["nece"]) == len(out["exists"])
    assert sum(out["nece"]) == rec["n_solution_params"]
    rows = out["rows"]
    assert len(rows) == rec["n_solution_params"] + 1 and rows[0]["after"] is None
    if along_given:
        assert [r["after"] for r in rows[1:]] == rec["solution_params"]
    q = names.index(rec["question_param"])
    assert rows[-1]["known"][q] == 1 and rows[-1]["value"][q] == rec["answer_int"]
    assert rows[0]["known"] == [0] * len(names) and set(rows[0]["value"]) == {23}
    for r, row in enumerate(rows[1:], 1):  # each sentence defines a parameter that was ready
        a = names.index(row["after"])
        assert rows[r - 1]["can_next"][a] == 1 and rows[r - 1]["nece_next"][a] == 1
        assert row["known"][a] == 1 and row["can_next"][a] == 0
    necessary = {n for n, x in zip(names, out["nece"], strict=True) if x}
    deps_of_q = {b for a, b in out["dep"] if a == rec["question_param"]}
    assert deps_of_q | {rec["question_param"]} == necessary  # nece = the question's ancestors


def test_labels_along_given_and_shortest_solutions(reference_records, tmp_path):
    recs = reference_records("igsm/med_pq_public")[:40]
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps({"problem": r["problem"], "solution": r["solution"]})
                           + "\n" for r in recs[:20])
                   + "".join(json.dumps({"problem": r["problem"]}) + "\n" for r in recs[20:]))
    out = tmp_path / "labels.jsonl"
    assert main(["labels", "--in", str(src), "--out", str(out)]) == 0
    got = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(got) == 40
    for i, (rec, lab) in enumerate(zip(recs, got, strict=True)):
        _check(rec, lab, along_given=i < 20)
        assert lab["truncated"] is False


def test_bad_problem_is_one_line_naming_it(tmp_path, capsys):
    src = tmp_path / "in.jsonl"
    src.write_text(json.dumps({"problem": "The number of nothing."}) + "\n")
    assert main(["labels", "--in", str(src), "--out", str(tmp_path / "o.jsonl")]) == 2
    assert "line 1: the problem does not parse" in capsys.readouterr().err
