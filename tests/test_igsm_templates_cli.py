"""`python -m physics_lm.data.igsm templates`: how novel the test templates are, by op."""

import json

from physics_lm.data.igsm.__main__ import main
from physics_lm.data.igsm.templates_cli import coverage, steps
from physics_lm.data.igsm.text.sketch import host_bin, sketch_text

INST1 = " Define Inst as a. so a = 0."
INTER1 = " Define Inter as a. so a = 0."
INTER_THEN_INST = " Define Inter as a. so a = 0. Define Inst as b. so b = a = 0."
WITH_LINE = (" Define Inst as a. so a = 0. Define Inst as b. c = a + a = 0 + 0 = 0. "
             "so b = 0 * c = 0 * 0 = 0.")


def test_steps_group_by_define_and_drop_symbols():
    assert steps(INTER_THEN_INST) == ("Define Inter as x. so x = 0",
                                      "Define Inst as x. so x = x = 0")
    assert steps(WITH_LINE)[1] == ("Define Inst as x. x = x + x = 0 + 0 = 0. "
                                   "so x = 0 * x = 0 * 0 = 0")


def test_coverage_finds_a_last_step_no_training_solution_ends_with():
    rows = coverage([(1, INST1), (2, INTER_THEN_INST)], [(1, INTER1), (1, INTER1), (2, WITH_LINE)])
    one, two = rows
    assert (one["train_problems"], one["test_problems"], one["test_templates"]) == (1, 2, 1)
    # the Inter step occurs (first step of the op-2 training solution) but never ends one
    assert one["steps_seen"] == 1.0 and one["last_step_seen"] == 0.0
    assert one["top_test"] == [[INTER1.strip(), 2]]
    # WITH_LINE's second step (with its intermediate line) occurs in no training solution
    assert two["steps_seen"] == 0.0 and two["step_pairs_seen"] == 0.0
    rows = coverage([(1, INST1), (2, INTER_THEN_INST), (3, WITH_LINE + INTER1)],
                    [(2, WITH_LINE)])
    assert rows[1]["steps_seen"] == rows[1]["step_pairs_seen"] == 1.0
    assert rows[1]["last_step_seen"] == 0.0  # its last step only ever precedes another


def test_cli_on_the_reference_corpus_split_by_bin(reference_records, tmp_path, capsys):
    recs = reference_records("igsm/med_pq_public")[:300]
    train, test = tmp_path / "train.jsonl", tmp_path / "test.jsonl"
    by_split = {True: [], False: []}
    for r in recs:
        by_split[host_bin(sketch_text(r["solution"])) < 16].append(r)
    train.write_text("".join(json.dumps(r) + "\n" for r in by_split[True]))
    test.write_text("".join(json.dumps(r) + "\n" for r in by_split[False]))
    out = tmp_path / "t.json"
    assert main(["templates", "--train", str(train), "--test", str(test), "--json", str(out)]) == 0
    rows = json.loads(out.read_text())
    assert sum(r["train_problems"] for r in rows) == len(by_split[True])
    assert sum(r["test_problems"] for r in rows) == len(by_split[False]) > 0
    assert "| op | train problems" in capsys.readouterr().out
    # a test problem given as training data is refused, naming its line
    assert main(["templates", "--train", str(test), "--test", str(test)]) == 2
    assert "line 1: template bin" in capsys.readouterr().err
    # a missing input (any data CLI command) or a line that is not JSON: one line naming it
    assert main(["templates", "--train", str(tmp_path / "nope.jsonl"), "--test", str(test)]) == 2
    assert f"{tmp_path / 'nope.jsonl'}: No such file" in capsys.readouterr().err
    bad = tmp_path / "bad.jsonl"
    bad.write_text(train.read_text().splitlines()[0] + "\n{oops\n")
    assert main(["templates", "--train", str(bad), "--test", str(test)]) == 2
    assert "line 2: not JSON" in capsys.readouterr().err
