"""Rebuild an iGSM problem (structure, dependency graph, values) from its text alone.

The judge and the probe labels need what the official evaluator takes from the generator's
``Problem`` object: the universe of parameters ``all_param``, the dependency graph
``whole_template``, the value of every parameter, the necessary set and the question. All of it is
recoverable from the text plus the name tables (SPEC §17), except items that occur nowhere in the
text (a top-layer item without children): they are absent here, so a solution naming them is
judged "unknown parameter" where the official judge would accept it as an unnecessary one.

Parameters use the official 4-tuples: ``(0, i, j, k)`` instance "item (i+1,k) in each item (i,j)",
``(1, i, j, k)`` abstract "things of layer k's category in each item (i,j)", and ``RNG``. Item
indices ``j`` follow the order of first appearance in the text (the official indices are not
written anywhere), so ``all_param`` has the official shape and grouping but not its item order.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from typing import NamedTuple

from physics_lm.data.igsm.text import names

MOD = 23
RNG: tuple[int, int, int, int] = (-1, 0, 0, 0)
_NO_RNG = frozenset((RNG,))
Param = tuple[int, int, int, int]
NUMERALS: dict[str, int] = {str(v): v for v in range(MOD)}

_SENTENCE_END = re.compile(r"(?<=[.?]) ")
_QUESTION = re.compile(r"How many (.+?) does (.+) have\?")
_STATEMENT = re.compile(r"The number of each (.+?) equals (.+)\.")
_CONST_FORM = re.compile(r"(\d+) (more than|times as much as) (.+)")
_LIST_SEP = re.compile(r", each | and each ")


class ProblemParseError(ValueError):
    """The text is not an iGSM problem (message says where)."""


class Statement(NamedTuple):
    """One problem sentence: ``param = const_op(const, combine(operands))``.

    A NamedTuple, not a frozen dataclass: a problem has ~10 of them and the judge CLI parses
    thousands of problems a second (a frozen dataclass's `__init__` was 7% of parsing)."""

    param: Param
    operands: tuple[Param, ...]
    combine: str  # "none" (constant only), "sum" (incl. a single copy) or "diff"
    const: int | None  # the random constant, None when the sentence has none
    const_op: str | None  # None (plain), "more" (c + X) or "times" (c * X)


@dataclass(frozen=True, eq=False)
class Problem:
    """A parsed problem; ``deps`` is the official ``whole_template`` (RNG included)."""

    text: str
    chain: int
    categories: tuple[str, ...]  # category name of each layer, top first
    items: tuple[tuple[str, ...], ...]  # item names per layer, in order of first appearance
    edges: frozenset[tuple[int, int, int]]  # (i, j, k): item (i, j) contains item (i+1, k)
    statements: tuple[Statement, ...]  # in text order
    question: Param
    all_param: tuple[Param, ...]
    deps: dict[Param, tuple[Param, ...]]  # direct dependencies of every param of all_param
    dep_sets: dict[Param, frozenset[Param]]  # the same without RNG (what the judge compares)
    values: dict[Param, int]  # every existing param (edges and all abstract params), mod 23
    necessary: frozenset[Param]  # the question and its ancestors (= the shortest solution's set)
    n_op: int  # op of the shortest solution (SPEC §7)
    name_to_param: dict[str, Param]
    param_index: dict[Param, int]
    question_name: str

    @property
    def answer(self) -> int:
        return self.values[self.question]

    def name(self, p: Param) -> str:
        """Display name ``X's Y`` as written in solutions (no "each")."""
        kind, i, j, k = p
        lower = self.items[i + 1][k] if kind == 0 else self.categories[k]
        return f"{self.items[i][j]}'s {lower}"

    def exists(self, p: Param) -> bool:
        """False only for instance pairs without a structure edge (isolated in whole_template)."""
        return p in self.values

    def children(self, i: int, j: int) -> list[int]:
        return [k for k in range(len(self.items[i + 1])) if (i, j, k) in self.edges]


def _num(text: str, where: str) -> int:
    if text not in NUMERALS:
        raise ProblemParseError(f"{where}: {text!r} is not a number 0-22")
    return NUMERALS[text]


@lru_cache(maxsize=1 << 14)
def _ref_candidates(ref: str) -> tuple[tuple[int, int, str, int, str, int], ...]:
    """All readings of ``X's Y``: (chain, pos_x, x, pos_y, y, kind) with kind 0/1."""
    cats = names.item_categories()
    out = []
    start = 0
    while (idx := ref.find("'s ", start)) >= 0:
        x, y = ref[:idx], ref[idx + 3 :]
        start = idx + 1
        y_cats = cats.get(y, ())
        for cx in cats.get(x, ()):
            chain, px = names.PLACE[cx]
            y_place = names.PLACE.get(y)
            if y_place is not None and y_place[0] == chain and y_place[1] > px:
                out.append((chain, px, x, y_place[1], y, 1))
            for cy in y_cats:
                if names.PLACE[cy] == (chain, px + 1):
                    out.append((chain, px, x, px + 1, y, 0))
    return tuple(out)


def _split_operands(body: str, where: str) -> tuple[list[str], str]:
    if body.startswith("each "):
        return [body[5:]], "sum"
    for head, combine in (("the sum of each ", "sum"), ("the difference of each ", "diff")):
        if body.startswith(head):
            refs = _LIST_SEP.split(body[len(head) :])
            if len(refs) < 2 or (combine == "diff" and len(refs) != 2):
                break
            return refs, combine
    raise ProblemParseError(f"{where}: cannot read the expression {body!r}")


def _read_sentences(text: str):
    """Yields raw records: ("q", ref) or ("s", target_ref, operand_refs, combine, const, op)."""
    for n, sent in enumerate(_SENTENCE_END.split(text.strip())):
        where = f"sentence {n}"
        if m := _QUESTION.fullmatch(sent):
            yield ("q", f"{m.group(2)}'s {m.group(1)}")
            continue
        m = _STATEMENT.fullmatch(sent)
        if not m:
            raise ProblemParseError(f"{where}: not a problem sentence: {sent[:80]!r}")
        target, body = m.groups()
        if body in NUMERALS:
            yield ("s", target, [], "none", NUMERALS[body], None)
            continue
        const, const_op = None, None
        if cm := _CONST_FORM.fullmatch(body):
            const = _num(cm.group(1), where)
            const_op = "more" if cm.group(2) == "more than" else "times"
            body = cm.group(3)
        refs, combine = _split_operands(body, where)
        yield ("s", target, refs, combine, const, const_op)


def _resolve(refs: list[str]) -> tuple[int, list[tuple[int, str, int, str, int]]]:
    """Picks the chain and one reading per reference (prefers readings made of known items)."""
    cands = [_ref_candidates(r) for r in refs]
    if all(len(c) == 1 for c in cands) and len({c[0][0] for c in cands}) == 1:
        return cands[0][0][0], [c[0][1:] for c in cands]  # the usual, unambiguous case
    for r, c in zip(refs, cands, strict=True):
        if not c:
            raise ProblemParseError(f"unknown parameter name {r!r}")
    chains = set.intersection(*({c[0] for c in cl} for cl in cands))
    if not chains:
        raise ProblemParseError("the names do not belong to one category chain")
    chain = min(chains)
    per_ref = [[c[1:] for c in cl if c[0] == chain] for cl in cands]
    known = {(r[0][0], r[0][1]) for r in per_ref if len(r) == 1}
    known |= {(r[0][2], r[0][3]) for r in per_ref if len(r) == 1 and r[0][4] == 0}
    chosen = []
    for readings in per_ref:
        good = [
            r for r in readings if (r[0], r[1]) in known and (r[4] == 1 or (r[2], r[3]) in known)
        ]
        chosen.append((good or readings)[0])
    return chain, chosen


def _ops(q: int) -> int:
    return 1 if q <= 2 else q - 1


@lru_cache(maxsize=4096)
def parse_problem(text: str) -> Problem:
    """Parses a problem text (statements and the question, either order).

    Raises:
        ProblemParseError: the text is not a well-formed iGSM problem (unknown names, a malformed
            sentence, no or two questions, a parameter stated twice, a cyclic definition, ...).
    """
    if not isinstance(text, str):
        raise ProblemParseError(f"problem must be a string, got {type(text).__name__}")
    raw = list(_read_sentences(text))
    questions = [r for r in raw if r[0] == "q"]
    if len(questions) != 1:
        raise ProblemParseError(f"expected one question, found {len(questions)}")
    statements = [r for r in raw if r[0] == "s"]
    # Distinct references in text order (each statement's target, then its operands): the item
    # numbering follows this order.
    refs = list(dict.fromkeys([x for r in statements for x in (r[1], *r[2])] + [questions[0][1]]))
    chain, chosen = _resolve(refs)
    reading = dict(zip(refs, chosen, strict=True))
    positions = {r[0] for r in chosen} | {r[2] for r in chosen}
    top = min(positions)
    depth = max(positions) - top + 1
    layer_items: list[list[str]] = [[] for _ in range(depth)]
    for ref in refs:
        px, x, py, y, kind = reading[ref]
        for pos, name in ((px, x), (py, y)) if kind == 0 else ((px, x),):
            if name not in layer_items[pos - top]:
                layer_items[pos - top].append(name)
    index = [{n: j for j, n in enumerate(layer)} for layer in layer_items]

    def param_of(ref: str) -> Param:
        px, x, py, y, kind = reading[ref]
        i = px - top
        return (kind, i, index[i][x], index[i + 1][y] if kind == 0 else py - top)

    stmts: dict[Param, Statement] = {}
    for _, target, ops, combine, const, const_op in statements:
        p = param_of(target)
        if p[0] != 0:
            raise ProblemParseError(f"statement defines an abstract parameter: {target!r}")
        if p in stmts:
            raise ProblemParseError(f"parameter stated twice: {target!r}")
        stmts[p] = Statement(p, tuple(param_of(o) for o in ops), combine, const, const_op)
    for p, st in stmts.items():
        for o in st.operands:
            if o[0] == 0 and o not in stmts:
                raise ProblemParseError(f"operand {o} of {p} has no statement")
    edges = frozenset(p[1:] for p in stmts)
    categories = names.CHAINS[chain][top : top + depth]
    # all_param in the official layout: every instance pair, then every abstract parameter.
    instance: list[tuple[str, Param]] = []
    abstract: list[tuple[str, Param]] = []
    deps: dict[Param, tuple[Param, ...]] = {}
    for i in range(depth - 1):
        upper, lower = layer_items[i], layer_items[i + 1]
        for j, x_name in enumerate(upper):
            kids = [x for x in range(len(lower)) if (i, j, x) in edges]
            for k, y_name in enumerate(lower):
                p = (0, i, j, k)
                instance.append((f"{x_name}'s {y_name}", p))
                st = stmts.get(p)
                deps[p] = (
                    () if st is None else st.operands + ((RNG,) if st.const is not None else ())
                )
            for k in range(i + 1, depth):
                p = (1, i, j, k)
                abstract.append((f"{x_name}'s {categories[k]}", p))
                if k == i + 1:
                    deps[p] = tuple((0, i, j, x) for x in kids)
                else:
                    deps[p] = tuple(q for x in kids for q in ((0, i, j, x), (1, i + 1, x, k)))
    all_param = [p for _, p in instance] + [p for _, p in abstract]
    values = _evaluate(stmts, deps, all_param)
    question = param_of(questions[0][1])
    if question not in values:
        raise ProblemParseError("the question asks about a pair that is not in the structure")
    necessary: set[Param] = set()
    stack = [question]
    while stack:
        p = stack.pop()
        if p not in necessary:
            necessary.add(p)
            stack.extend(d for d in deps[p] if d != RNG)
    problem = Problem(
        text=text,
        chain=chain,
        categories=categories,
        items=tuple(tuple(layer) for layer in layer_items),
        edges=edges,
        statements=tuple(stmts.values()),
        question=question,
        all_param=tuple(all_param),
        deps=deps,
        dep_sets={p: frozenset(ds) - _NO_RNG if ds and ds[-1] == RNG else frozenset(ds)
                  for p, ds in deps.items()},
        values=values,
        necessary=frozenset(necessary),
        n_op=sum(_ops(len(deps[p])) for p in necessary),
        name_to_param=dict(instance + abstract),  # later entries win, as in the official table
        param_index={p: n for n, p in enumerate(all_param)},
        question_name="",
    )
    object.__setattr__(problem, "question_name", problem.name(question))
    return problem


def _evaluate(
    stmts: dict[Param, Statement], deps: dict[Param, tuple[Param, ...]], all_param: list[Param]
) -> dict[Param, int]:
    """Values (mod 23) of every statement parameter and every abstract parameter."""
    values: dict[Param, int] = {}
    visiting: set[Param] = set()

    def value(p: Param) -> int:  # callers look in `values` first: most lookups are hits
        if p in visiting:
            raise ProblemParseError("cyclic definition in the problem")
        visiting.add(p)
        if p[0] == 1:
            xs = [values[q] if q in values else value(q) for q in deps[p]]
            if p[3] == p[1] + 1:
                v = sum(xs)
            else:  # pairs (child count, child's count of layer k)
                v = sum(xs[n] * xs[n + 1] for n in range(0, len(xs), 2))
        else:
            s = stmts[p]
            xs = [values[o] if o in values else value(o) for o in s.operands]
            x = (xs[0] - xs[1]) if s.combine == "diff" else sum(xs)
            if s.const is None:
                v = x
            elif s.const_op is None:
                v = s.const
            else:
                v = s.const + x if s.const_op == "more" else s.const * x
        visiting.discard(p)
        values[p] = v % MOD
        return values[p]

    for p in all_param:
        if (p[0] == 1 or p in stmts) and p not in values:
            value(p)
    return values
