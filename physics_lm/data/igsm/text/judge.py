"""Judge an iGSM solution from text alone.

``correct`` reproduces the official ``true_correct`` (SPEC §17; ``tools/sol_parser.py`` and
``tools_test.py`` of the official release) check by check: the same sentence/step splitting, the
same syntax rules, reference-value, arithmetic and dependency checks, and the same blind spots
(wrong constants pass if the final answer matches; unnecessary, duplicated or non-existent but
dependency-free parameters pass; BACK sentences are skipped). Where the official code raises
(empty text; fewer steps than the problem's op) we return ``correct=False`` instead.

Beyond the official judge: ``shortest`` (correct and no parameter outside the necessary set, none
defined twice: the level-1 criterion of Part 2.1), ``n_unnecessary`` (distinct parameters),
``n_back``, and ``first_error``: the index (in the ``". "``-split sentence list, BACK sentences
included) of the first sentence that is wrong, with ``error_kind``. A sentence is wrong if the
official checks fail on it or if the value it gives a parameter differs from the true value (so
a wrong constant is located even when the official verdict does not notice it). Dependency errors
are split into ``not_computable`` (some true dependency is not defined yet: the Part 2.2 mistake)
and ``wrong_dependency``. ``first_error`` is None when no single sentence is wrong; a global
failure (``not_question``, ``wrong_answer``, ``too_few_ops``, ``unparseable``) is still reported
in ``error_kind`` and ``reason``.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, fields

from physics_lm.data.igsm.text.parser import (
    MOD,
    NUMERALS,
    Param,
    Problem,
    ProblemParseError,
    parse_problem,
)

_SIGNS = (" + ", " - ", " * ")


@dataclass(frozen=True)
class Verdict:
    """The judgement of one solution (see module docstring for the semantics)."""

    correct: bool
    shortest: bool
    n_unnecessary: int
    n_back: int
    first_error: int | None
    error_kind: str | None
    reason: str
    n_ops: int = 0  # computation steps ("so X = ..."), temps included: the solution's op count

    def to_dict(self) -> dict:
        # flat scalar fields: a comprehension is ~5x faster than dataclasses.asdict's deep copy
        return {f: getattr(self, f) for f in _VERDICT_FIELDS}


_VERDICT_FIELDS = tuple(f.name for f in fields(Verdict))


class _Step:
    """One parsed ``sym = hints = cals = ans`` step (``name`` is "" for temps)."""

    __slots__ = ("ans", "cals", "deps", "hints", "name", "param", "parents", "sent", "sign", "sym")

    def __init__(
        self,
        sent: int,
        sym: str,
        name: str,
        hints: list[str],
        parents: list[str],
        cals: list[int],
        sign: str | None,
        ans: int,
    ) -> None:
        self.sent, self.sym, self.name, self.hints, self.parents = sent, sym, name, hints, parents
        self.cals, self.sign, self.ans = cals, sign, ans
        self.param: Param | None = None
        self.deps: set[Param | None] = set()  # params of the named steps reached through temps


class _StepError(Exception):
    def __init__(self, kind: str, msg: str) -> None:
        super().__init__(msg)
        self.kind, self.msg = kind, msg


def split_steps(solution: str) -> tuple[list[tuple[int, str]], int]:
    """Official splitting into (sentence index, step text) pairs; also returns n_back."""
    if solution[:1] == " ":
        solution = solution[1:]
    if solution[-1:] == ".":
        solution = solution[:-1]
    steps: list[tuple[int, str]] = []
    n_back = 0
    for n, sent in enumerate(solution.split(". ")):
        if " BACK" in sent:
            n_back += 1
            continue
        small = sent.split("; ")
        if len(small) > 2:
            steps.extend((n, x) for x in small[1:-1])
        steps.append((n, small[0] + small[-1][4:]))
    return steps, n_back


def _parse_step(n: int, text: str, symbols: dict[str, _Step]) -> _Step:
    """The official step grammar (SPEC §17.1 steps 4-7); raises _StepError."""
    pieces = text.split(" = ")
    head = pieces[0]
    name = ""
    if head.startswith("Define"):
        sym_name = head[7:].split(" as ")
        if len(sym_name) == 1:
            sym = sym_name[0]
        else:
            name, sym = sym_name[0], sym_name[1]
    else:
        sym = head
    if len(sym) != 1:
        raise _StepError("unparseable", f"illegal symbol {sym!r}")
    hints: list[str] = []
    parents: list[str] = []
    cals: list[int] = []
    sign = None
    for piece in pieces[1:]:
        if piece in NUMERALS:
            if not ((len(hints) == 2 and len(cals) == 2) or (len(hints) < 2 and len(cals) < 2)):
                raise _StepError("unparseable", f"operands {hints} do not match numbers {cals}")
            for p in parents:
                if p not in symbols:
                    raise _StepError(
                        "undefined_symbol", f"symbol {p!r} is used before it is defined"
                    )
            if sym in symbols:
                raise _StepError("duplicated_symbol", f"symbol {sym!r} is defined twice")
            return _Step(n, sym, name, hints, parents, cals, sign, NUMERALS[piece])
        if " " in piece:  # every sign has spaces around it
            for op in _SIGNS:
                if op in piece:
                    parts = piece.split(op)
                    if parts[0] in NUMERALS and parts[1] in NUMERALS:
                        if len(parts) == 2:  # the usual "a + b": both known numerals (0-22)
                            cals += (NUMERALS[parts[0]], NUMERALS[parts[1]])
                        else:
                            try:
                                cals.extend(int(x) % MOD for x in parts)
                            except ValueError:
                                msg = f"bad number in {piece!r}"
                                raise _StepError("unparseable", msg) from None
                    else:
                        hints += parts
                        parents += [x for x in parts if x not in NUMERALS]
                    sign = op[1]
                    break
            else:
                hints.append(piece)
                parents.append(piece)
        else:
            hints.append(piece)
            parents.append(piece)
    raise _StepError("unparseable", f"no result number in {text[:60]!r}")


def _lookup(problem: Problem, name: str) -> Param | None:
    """The official name2param: tolerates one leading space and a leading "each "."""
    p = problem.name_to_param.get(name)
    if p is not None:
        return p
    if name.startswith(" "):
        name = name[1:]
    if name.startswith("each"):
        name = name[5:]
    return problem.name_to_param.get(name)


def _fail(kind: str, reason: str, n_back: int = 0, first: int | None = None) -> Verdict:
    return Verdict(False, False, 0, n_back, first, kind, reason)


def judge_problem(
    problem: Problem,
    solution: str,
    answer: str | None = None,
    trace: list[tuple[int, Param]] | None = None,
) -> Verdict:
    """Judges a solution against an already parsed problem (the fast path for batches).

    Args:
        problem: from :func:`parse_problem`.
        solution: the solution text.
        answer: the answer text, if any (one leading space tolerated).
        trace: if given, receives (sentence index, param) for every sentence that names a
            parameter of the problem, in order (the probe labels replay it).
    """
    if not isinstance(solution, str) or not solution.strip(" ."):
        return _fail("unparseable", "unparseable: empty solution", first=0)
    raw_steps, n_back = split_steps(solution)
    symbols: dict[str, _Step] = {}
    errors: list[tuple[int, str, str]] = []  # (sentence, kind, message), in step order
    ok = parsed = True  # the official verdict so far; whether every step parsed
    last: _Step | None = None
    n_steps = 0
    defined: dict[Param, int] = {}  # param -> number of definitions so far
    names_seen: set[str] = set()
    values, dep_sets = problem.values, problem.dep_sets
    for n, text in raw_steps:
        try:
            step = _parse_step(n, text, symbols)
        except _StepError as e:
            errors.append((n, e.kind, f"{e.kind.replace('_', ' ')} in sentence {n}: {e.msg}"))
            ok = parsed = False
            break
        # Checks that only look backwards, so running them while parsing changes no verdict.
        hints = step.hints
        if len(hints) == 1:
            if step.ans != symbols[hints[0]].ans:
                errors.append((n, "wrong_reference", f"sentence {n}: {hints[0]} is not {step.ans}"))
                ok = False
        elif step.cals:
            for h, c in zip(hints, step.cals, strict=False):
                if h not in NUMERALS and symbols[h].ans != c:
                    errors.append((n, "wrong_reference", f"sentence {n}: {h} is not {c}"))
                    ok = False
            a, b = step.cals
            sign = step.sign
            if (a + b if sign == "+" else a - b if sign == "-" else a * b) % MOD != step.ans:
                errors.append(
                    (n, "wrong_arithmetic", f"sentence {n}: {a} {sign} {b} != {step.ans}")
                )
                ok = False
        deps = step.deps
        for ps in step.parents:
            parent = symbols[ps]
            if parent.name:
                deps.add(parent.param)
            else:
                deps |= parent.deps
        symbols[step.sym] = step
        last = step
        n_steps += 1
        if not step.name:
            continue
        param = step.param = _lookup(problem, step.name)
        if trace is not None and param is not None:
            trace.append((n, param))
        first_time = step.name not in names_seen
        names_seen.add(step.name)
        if param is None:
            if first_time:
                msg = f"sentence {n}: {step.name!r} is not a parameter of this problem"
                errors.append((n, "unknown_param", msg))
                ok = False
            continue
        want = dep_sets[param]
        if deps != want:
            missing = want - defined.keys()
            if missing:
                kind, msg = "not_computable", f"needs {sorted(map(problem.name, missing))} first"
            else:
                kind, msg = "wrong_dependency", "is computed from the wrong parameters"
            errors.append((n, kind, f"sentence {n}: {problem.name(param)} {msg}"))
            ok = False  # the official pass stops at its first problem: same verdict
        elif param in values and step.ans != values[param]:
            msg = f"sentence {n}: {problem.name(param)} = {values[param]}, not {step.ans}"
            errors.append((n, "wrong_value", msg))
        defined[param] = defined.get(param, 0) + 1
    if last is None and ok:
        return _fail("unparseable", "unparseable: no valid sentence", n_back, 0)

    global_kind, global_reason = None, ""
    if parsed and last is not None:
        q_name = problem.question_name
        if last.ans != problem.answer:
            ok = False
            global_kind = "wrong_value" if last.name == q_name else "not_question"
            global_reason = f"final value {last.ans} is not the answer {problem.answer}"
        elif ok and last.name != q_name:
            ok = False
            global_kind, global_reason = "not_question", f"the last parameter is not {q_name}"
        elif ok and n_steps < problem.n_op:
            ok = False
            global_kind = "too_few_ops"
            global_reason = f"{n_steps} steps < op {problem.n_op} (the official judge raises)"
    if answer is not None:
        ans_text = answer if isinstance(answer, str) else str(answer)
        ans_text = ans_text[1:] if ans_text[:1] == " " else ans_text
        if ans_text != str(problem.answer):
            ok = False
            if global_kind is None:
                global_kind = "wrong_answer"
                global_reason = f"answer field {answer!r} is not {problem.answer}"

    unnecessary = [p for p in defined if p not in problem.necessary]
    shortest = ok and not unnecessary and len(defined) == len(names_seen) == sum(defined.values())
    if errors:
        first, kind, reason = min(errors, key=lambda e: e[0])
    else:
        first, kind, reason = None, global_kind, global_reason
    if ok:
        reason = "correct" + (
            f" ({len(unnecessary)} unnecessary parameters)" if unnecessary else ""
        )
        if errors:
            reason += f"; but {min(errors, key=lambda e: e[0])[2]}"
    return Verdict(ok, shortest, len(unnecessary), n_back, first, kind, reason, n_steps)


@functools.lru_cache(maxsize=1024)
def _parse_cached(problem_text: str) -> Problem:
    """Parsing is ~2/3 of judging a solution, and evaluations judge several solutions of each
    problem (decoders, retries): parse each distinct text once. Problems are never mutated."""
    return parse_problem(problem_text)


def judge(problem_text: str, solution_text: str, answer_text: str | None = None) -> Verdict:
    """Judges one solution (and optionally the answer field) from text alone; never raises."""
    try:
        problem = _parse_cached(problem_text)
    except ProblemParseError as e:
        return _fail("unparseable", f"unparseable problem: {e}")
    except TypeError:  # unhashable non-string input
        return _fail("unparseable", "unparseable problem: not a string")
    return judge_problem(problem, solution_text, answer_text)


def judge_batch(records: Iterable[dict]) -> Iterator[dict]:
    """Yields each record (keys ``problem``, ``solution``, optional ``answer``) with the verdict
    fields added: correct, shortest, n_unnecessary, n_back, first_error, error_kind, reason,
    n_ops."""
    for rec in records:
        v = judge(rec.get("problem"), rec.get("solution"), rec.get("answer"))
        yield {**rec, **v.to_dict()}
