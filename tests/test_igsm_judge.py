"""The judge: official verdicts on reference solutions, on our mutations, and on garbage."""

import json
import random
import string

import pytest

from physics_lm.data.igsm.text.judge import judge, judge_batch, judge_problem
from physics_lm.data.igsm.text.parser import RNG, parse_problem

CORPORA = ("med_pq_public", "hard_pq_public", "med_retry_public", "med_retry_weak_public")


def _records(reference_records, corpora=CORPORA):
    return [r for corpus in corpora for r in reference_records(f"igsm/{corpus}")]


@pytest.fixture(scope="module")
def pq(reference_records):
    return _records(reference_records, ("med_pq_public", "hard_pq_public"))


# --- a small independent solution writer (SPEC §12 format) -----------------------------------


def _render(problem, order, rng):
    """Writes a correct solution defining ``order`` (a topological order) with random letters."""
    letters = iter(rng.sample(string.ascii_letters, 52))
    sym, sentences = {}, []
    stmt = {s.param: s for s in problem.statements}

    def val(p):
        return problem.values[p]

    for p in order:
        temps = []

        def binop(a, b, sign, temps=temps):
            va, vb = a[1], b[1]
            v = (va + vb if sign == "+" else va - vb if sign == "-" else va * vb) % 23
            return f"{a[0]} {sign} {b[0]} = {va} {sign} {vb}", v

        def temp(a, b, sign, temps=temps):
            rhs, v = binop(a, b, sign)
            t = next(letters)
            temps.append(f"{t} = {rhs} = {v}")
            return (t, v)

        def fold(ops, sign="+"):
            while len(ops) > 2:
                ops = [temp(ops[0], ops[1], sign), *ops[2:]]
            return ops

        if p[0] == 0 and p not in stmt:  # non-existent pair: any constant, no dependencies
            rhs, v = "5", 5
        elif p[0] == 0:
            s = stmt[p]
            ops = [(sym[o], val(o)) for o in s.operands]
            sign = "-" if s.combine == "diff" else "+"
            if s.const is not None and s.const_op is None:
                rhs, v = str(s.const), s.const
            elif s.const is not None:
                x = ops[0] if len(ops) == 1 else temp(*fold(ops, sign), sign)
                rhs, v = binop((str(s.const), s.const), x, "+" if s.const_op == "more" else "*")
            elif len(ops) == 1:
                rhs, v = f"{ops[0][0]} = {ops[0][1]}", ops[0][1]
                rhs = ops[0][0]
            else:
                rhs, v = binop(*fold(ops, sign), sign)
        else:
            deps = problem.deps[p]
            if p[3] == p[1] + 1:
                ops = [(sym[d], val(d)) for d in deps]
            else:
                pairs = [
                    ((sym[deps[n]], val(deps[n])), (sym[deps[n + 1]], val(deps[n + 1])))
                    for n in range(0, len(deps), 2)
                ]
                ops = pairs if len(pairs) == 1 else [temp(a, b, "*") for a, b in pairs]
            if not ops:
                rhs, v = "0", 0
            elif p[3] != p[1] + 1 and len(pairs) == 1:
                rhs, v = binop(*pairs[0], "*")
            elif len(ops) == 1:
                rhs, v = ops[0][0], ops[0][1]
            else:
                rhs, v = binop(*fold(ops), "+")
        s_ = next(letters)
        sym[p] = s_
        body = "; ".join([*temps, f"so {s_} = {rhs} = {v}" if rhs != str(v) else f"so {s_} = {v}"])
        sentences.append(f"Define {problem.name(p)} as {s_}; {body}")
    return ". ".join(sentences) + "."


def _topo(problem, params, rng, last=None, done=()):
    params, out, done = set(params) - {last}, [], set(done)
    while params:
        ready = [p for p in sorted(params) if all(d == RNG or d in done for d in problem.deps[p])]
        p = rng.choice(ready)
        out.append(p)
        done.add(p)
        params.remove(p)
    return [*out, last] if last is not None else out


def _ancestors(problem, p):
    seen, todo = set(), [p]
    while todo:
        q = todo.pop()
        if q not in seen:
            seen.add(q)
            todo.extend(d for d in problem.deps[q] if d != RNG)
    return seen


# --- official solutions ---------------------------------------------------------------------


def test_reference_solutions_are_correct_and_shortest(reference_records):
    n = 0
    for rec in _records(reference_records):
        v = judge(rec["problem"], rec["solution"], rec["answer"])
        assert v.correct and v.shortest, (rec["seed"], v)
        assert v.first_error is None and v.error_kind is None and v.reason == "correct"
        assert v.n_unnecessary == 0
        assert v.n_back == rec.get("n_back", 0)
        assert v.n_ops == rec["op"]  # a shortest solution has exactly the problem's op steps
        if "solution_clean" in rec:
            assert judge(rec["problem"], rec["solution_clean"]).shortest
        n += 1
    assert n == 660


def test_our_renderer_agrees_and_reorderings_pass(pq):
    rng = random.Random(0)
    for rec in pq[::3]:
        p = parse_problem(rec["problem"])
        for _ in range(2):
            sol = _render(p, _topo(p, p.necessary, rng, last=p.question), rng)
            v = judge(rec["problem"], sol, rec["answer"])
            assert v.correct and v.shortest and v.first_error is None, (sol, v)


def test_unnecessary_parameters_pass_but_are_not_shortest(pq):
    rng = random.Random(1)
    n = 0
    for rec in pq[::2]:
        p = parse_problem(rec["problem"])
        extra = [
            q for q in p.all_param if q not in p.necessary and p.question not in _ancestors(p, q)
        ]
        if not extra:
            continue
        u = rng.choice(extra)
        closure = _ancestors(p, u)
        sol = _render(p, _topo(p, p.necessary | closure, rng, last=p.question), rng)
        v = judge(rec["problem"], sol)
        assert v.correct and not v.shortest, (sol, v)
        assert v.n_unnecessary == len(closure - p.necessary) and v.first_error is None
        assert "unnecessary" in v.reason
        # The same extra sentence after the question: the last parameter is not the question.
        order = [
            *_topo(p, p.necessary, rng, last=p.question),
            *_topo(p, closure - p.necessary, rng, done=p.necessary),
        ]
        if not closure <= p.necessary:
            v = judge(rec["problem"], _render(p, order, rng))
            assert not v.correct and v.error_kind == "not_question" and v.first_error is None
        n += 1
    assert n > 100


def _sentences(sol):
    return sol[:-1].split(". ")


def _symbols(sentence):
    """(defined symbol, used symbols) of one official solution sentence."""
    rest = sentence.rsplit(" as ", 1)[1]
    toks = [t.rstrip(";") for t in rest.split(" ")]
    letters = [t for t in toks if len(t) == 1 and t in string.ascii_letters]
    return letters[0], set(letters)


def test_renamed_letters_and_valid_reorderings_pass(pq):
    rng = random.Random(2)
    for rec in pq:
        sents = _sentences(rec["solution"])
        perm = dict(zip(string.ascii_letters, rng.sample(string.ascii_letters, 52), strict=True))
        renamed = []
        for s in sents:
            head, rest = s.rsplit(" as ", 1)
            rest = " ".join(
                perm.get(t.rstrip(";"), t.rstrip(";")) + (";" if t.endswith(";") else "")
                for t in rest.split(" ")
            )
            renamed.append(f"{head} as {rest}")
        assert judge(rec["problem"], ". ".join(renamed) + ".").shortest
        # Reorder whole sentences: any order where symbols are defined before use, question last.
        info = [_symbols(s) for s in sents[:-1]]
        own = {d for d, _ in info}
        todo, done, order = list(range(len(info))), set(), []
        while todo:
            ready = [i for i in todo if (info[i][1] & own) - {info[i][0]} <= done]
            i = rng.choice(ready)
            order.append(i)
            todo.remove(i)
            done.add(info[i][0])
        shuffled = ". ".join([*(sents[i] for i in order), sents[-1]]) + "."
        assert judge(rec["problem"], shuffled, rec["answer"]).shortest


def test_official_tolerances(pq):
    rec = next(r for r in pq if r["n_solution_params"] >= 3)
    sol = rec["solution"]
    assert judge(rec["problem"], sol[:-1]).correct  # no final period
    assert judge(rec["problem"], " " + sol).correct  # leading space
    assert judge(rec["problem"], sol.replace("Define ", "Define each ", 1)).correct
    p = parse_problem(rec["problem"])
    ghost = next(q for q in p.all_param if not p.exists(q))
    v = judge(rec["problem"], f"Define {p.name(ghost)} as z; so z = 17. " + sol.replace(" z", " Z"))
    assert v.correct and not v.shortest and v.n_unnecessary == 1


# --- mistakes -------------------------------------------------------------------------------


def _set_result(sentence, value):
    head, _, _ = sentence.rpartition(" = ")
    return f"{head} = {value}"


def test_mutations_get_the_official_verdicts(pq):
    rng = random.Random(3)
    seen = set()
    for rec in pq:
        sents = _sentences(rec["solution"])
        prob, ans = rec["problem"], rec["answer"]
        if len(sents) < 2:
            continue
        s = rng.randrange(len(sents) - 1)
        # wrong value at sentence s
        old = int(sents[s].rpartition(" = ")[2])
        bad = [*sents[:s], _set_result(sents[s], (old + 1) % 23), *sents[s + 1 :]]
        v = judge(prob, ". ".join(bad) + ".", ans)
        assert not v.correct and v.first_error == s, (bad, v)
        assert v.error_kind in {"wrong_value", "wrong_reference", "wrong_arithmetic"}
        seen.add(v.error_kind)
        # skipped step / use before definition: the first user of s's symbol fails
        sym = _symbols(sents[s])[0]
        users = [i for i in range(s + 1, len(sents)) if sym in _symbols(sents[i])[1]]
        v = judge(prob, ". ".join(sents[:s] + sents[s + 1 :]) + ".", ans)
        assert (
            not v.correct and v.error_kind == "undefined_symbol" and v.first_error == users[0] - 1
        )
        moved = [*sents[:s], *sents[s + 1 : users[0] + 1], sents[s], *sents[users[0] + 1 :]]
        v = judge(prob, ". ".join(moved) + ".", ans)
        assert (
            not v.correct and v.error_kind == "undefined_symbol" and v.first_error == users[0] - 1
        )
        # wrong dependency: the sentence claims to define a parameter with other dependencies
        p = parse_problem(prob)
        this = p.name_to_param[sents[s][7:].rsplit(" as ", 1)[0]]
        others = [
            q
            for q in p.all_param
            if {d for d in p.deps[q] if d != RNG} != {d for d in p.deps[this] if d != RNG}
        ]
        q = rng.choice(others)
        swapped = sents[s].replace(p.name(this), p.name(q), 1)
        v = judge(prob, ". ".join([*sents[:s], swapped, *sents[s + 1 :]]) + ".", ans)
        assert not v.correct and v.first_error == s
        assert v.error_kind in {"wrong_dependency", "not_computable"}
        seen.add(v.error_kind)
        # wrong final answer field
        v = judge(prob, rec["solution"], str((int(ans) + 1) % 23))
        assert not v.correct and v.error_kind == "wrong_answer" and v.first_error is None
        # duplicated symbol
        dup = sents[s + 1].replace(f" as {_symbols(sents[s + 1])[0]};", f" as {sym};", 1)
        dup = dup.replace(f"so {_symbols(sents[s + 1])[0]} = ", f"so {sym} = ", 1)
        v = judge(prob, ". ".join([*sents[: s + 1], dup, *sents[s + 2 :]]) + ".", ans)
        assert not v.correct and v.error_kind == "duplicated_symbol" and v.first_error == s + 1
    assert seen >= {
        "wrong_value",
        "wrong_reference",
        "wrong_arithmetic",
        "not_computable",
        "wrong_dependency",
    }


def test_first_error_locates_a_wrong_constant_the_official_judge_ignores(pq):
    rec = next(r for r in pq if r["n_solution_params"] == 1 and "+" not in r["solution"])
    sol = rec["solution"]  # e.g. "Define X's Y as a; so a = 7."
    ans = int(rec["answer"])
    v = judge(rec["problem"], _set_result(sol[:-1], (ans + 1) % 23) + ".")
    assert not v.correct and v.first_error == 0 and v.error_kind == "wrong_value"


# --- robustness ------------------------------------------------------------------------------


def test_fuzzed_text_never_raises(pq):
    rng = random.Random(4)
    alphabet = string.ascii_letters + string.digits + " .;=+-*'?,"
    for rec in pq[:60]:
        prob, sol = rec["problem"], rec["solution"]
        words = sol.split(" ")
        cases = [
            sol[: rng.randrange(len(sol))],
            "".join(rng.choice(alphabet) for _ in range(rng.randrange(1, 80))),
            " ".join(rng.choice(words) for _ in range(rng.randrange(1, 40))),
            sol.replace(" = ", " =  ", 1),
            sol.replace(";", "", 1),
            sol.replace("so ", "", 1),
            "",
            " ",
            ".",
            ". . .",
            "Define",
            "Define X as BACK.",
            "Define a; so a = 1.",
            sol * 2,
        ]
        for case in cases:
            v = judge(prob, case)
            assert isinstance(v.correct, bool) and isinstance(v.reason, str) and v.reason
            if v.correct:
                assert case.rstrip(".") in (sol.rstrip("."), sol[:-1].rstrip("."))
        cut = prob[: rng.randrange(len(prob))]
        v = judge(cut, sol)
        assert isinstance(v.correct, bool)
        assert judge("".join(rng.choice(alphabet) for _ in range(50)), sol).reason.startswith(
            "unparseable"
        )
    assert judge(None, None).error_kind == "unparseable"


def test_unparseable_solution_verdicts():
    prob = (
        "The number of each Penguin Beach's Giraffe equals 6. "
        "How many Animal does Penguin Beach have?"
    )
    assert (
        judge(prob, "Define Penguin Beach's Animal as J; so J = 6.").correct is False
    )  # dep missing
    for text in ("", "hello world", "Define Penguin Beach's Giraffe as ee; so ee = 6."):
        v = judge(prob, text)
        assert not v.correct and v.error_kind == "unparseable" and v.first_error == 0
    good = (
        "Define Penguin Beach's Giraffe as e; so e = 6. "
        "Define Penguin Beach's Animal as J; so J = e = 6."
    )
    assert judge(prob, good, "6").shortest
    assert judge_problem(parse_problem(prob), good).correct
    out = list(judge_batch([{"problem": prob, "solution": good, "id": 7}]))
    assert out[0]["id"] == 7 and out[0]["correct"] and out[0]["n_back"] == 0


def test_too_few_ops_is_false_where_the_official_judge_raises():
    # Penguin Beach's Leopard = 0 more than Giraffe + Lion: a one-step "sum" without the constant
    # has the right dependencies and value, but fewer steps than op (official: ValueError).
    prob = (
        "The number of each Penguin Beach's Giraffe equals 6. The number of each Penguin Beach's "
        "Lion equals 2. The number of each Penguin Beach's Leopard equals 0 more than the sum of "
        "each Penguin Beach's Giraffe and each Penguin Beach's Lion. "
        "How many Leopard does Penguin Beach have?"
    )
    full = (
        "Define Penguin Beach's Giraffe as a; so a = 6. "
        "Define Penguin Beach's Lion as b; so b = 2. "
        "Define Penguin Beach's Leopard as c; d = a + b = 6 + 2 = 8; so c = 0 + d = 0 + 8 = 8."
    )
    assert judge(prob, full, "8").shortest
    short = full.replace(
        "d = a + b = 6 + 2 = 8; so c = 0 + d = 0 + 8 = 8", "so c = a + b = 6 + 2 = 8"
    )
    v = judge(prob, short, "8")
    assert not v.correct and v.error_kind == "too_few_ops"


def test_cli_judge_and_tokenize(tmp_path, pq, capsys):
    from physics_lm.data.igsm.__main__ import main

    src = tmp_path / "in.jsonl"
    rows = [
        {"problem": r["problem"], "solution": r["solution"], "answer": r["answer"], "k": i}
        for i, r in enumerate(pq[:5])
    ]
    rows[1]["solution"] = "so so = = each"  # garbage, but made of vocabulary words
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "out.jsonl"
    assert main(["judge", "--in", str(src), "--out", str(out)]) == 0
    got = [json.loads(line) for line in out.read_text().splitlines()]
    assert [g["k"] for g in got] == list(range(5))
    assert [g["correct"] for g in got] == [True, False, True, True, True]
    assert got[1]["reason"].startswith("unparseable") and got[1]["first_error"] == 0
    keys = {"correct", "shortest", "n_unnecessary", "n_back", "first_error", "reason"}
    assert keys <= set(got[0])
    again = tmp_path / "again.jsonl"  # judging verdicts again replaces them (keys not repeated)
    assert main(["judge", "--in", str(out), "--out", str(again)]) == 0
    assert [json.loads(line) for line in again.read_text().splitlines()] == got
    assert all(line.count('"correct": ') == 1 for line in again.read_text().splitlines())
    tok = tmp_path / "tok.jsonl"
    assert main(["tokenize", "--in", str(src), "--out", str(tok)]) == 0
    got = [json.loads(line) for line in tok.read_text().splitlines()]
    assert got[0]["problem_decoded"] == rows[0]["problem"] and got[0]["problem_ids"]
    assert got[2]["solution_decoded"] == rows[2]["solution"]
    src.write_text(json.dumps({"problem": "The Blorp", "solution": "x"}) + "\n")
    capsys.readouterr()
    assert main(["tokenize", "--in", str(src), "--out", str(tok)]) == 2
    err = capsys.readouterr().err
    assert "tokenize: error: line 1, problem:" in err and err.count("\n") == 1, err


def test_cli_workers_write_what_one_process_writes(tmp_path, pq):
    """`--workers 2` forks a pool once the input holds a second block of lines: the output is
    byte-identical to one process's, in input order; a bad line in a worker's block is still one
    error line naming it (exit 2), and a negative count is refused."""
    import subprocess
    import sys

    from physics_lm.data.igsm.judge_cli import BLOCK

    rng = random.Random(0)
    rows = []
    for i in range(2 * BLOCK + 37):  # three blocks
        r = rng.choice(pq)
        sol = r["solution"] if i % 3 else r["solution"].replace(" = ", " = 1", 1)
        rows.append({"problem": r["problem"], "solution": sol, "answer": r["answer"], "k": i})
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "physics_lm.data.igsm", *args],
                              capture_output=True, text=True, timeout=120)

    outs = {}
    for w in (1, 2):
        outs[w] = tmp_path / f"out{w}.jsonl"
        done = cli("judge", "--in", str(src), "--out", str(outs[w]), "--workers", str(w))
        assert done.returncode == 0, done.stderr
        n_ok = sum(json.loads(line)["correct"] for line in outs[w].read_text().splitlines())
        assert f"{len(rows)} lines" in done.stderr and f"{n_ok} correct" in done.stderr
    assert outs[1].read_bytes() == outs[2].read_bytes()
    got = [json.loads(line) for line in outs[2].read_text().splitlines()]
    assert [g["k"] for g in got] == list(range(len(rows)))
    assert 0 < sum(g["correct"] for g in got) < len(rows)
    bad = 2 * BLOCK + 5  # a line of the third block
    text = src.read_text().splitlines()
    text[bad - 1] = "{not json"
    src.write_text("\n".join(text) + "\n")
    done = cli("judge", "--in", str(src), "--out", str(outs[2]), "--workers", "2")
    assert done.returncode == 2 and f"line {bad}: not JSON" in done.stderr, done.stderr
    assert done.stderr.count("\n") == 1, done.stderr
    done = cli("labels", "--in", str(src), "--out", str(outs[2]), "--workers", "-1")
    assert done.returncode == 2 and "--workers=-1" in done.stderr, done.stderr


@pytest.mark.parametrize("family", ["cfg", "igsm"])
def test_every_data_family_dispatches_commands_the_same_way(family, capsys):
    """`python -m physics_lm.data.<family> COMMAND`: --help lists the commands; an unknown
    command is one line naming it and the known ones, exit status 2."""
    import importlib

    cli = importlib.import_module(f"physics_lm.data.{family}.__main__")
    assert cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    assert all(f"\n  {name} " in out for name in cli.COMMANDS), out
    assert cli.main(["nope", "--in", "x"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "'nope'" in err, err
    assert all(name in err for name in cli.COMMANDS), err
    assert cli.main([]) == 2
