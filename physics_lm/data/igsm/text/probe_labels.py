"""V-probing labels of Part 2.1 (SPEC §15), computed from a parsed problem and a solution.

Row labels, one row per solution position: row 0 = after reading the problem, row r = after the
r-th correct solution sentence (BACK sentences make no row). Columns are ``problem.all_param``.

* ``nece``: the parameter is necessary (an ancestor of the question, or the question).
* ``known``: defined by one of the first r rows' sentences.
* ``value``: its value (0-22) if known, else 23.
* ``can_next``: not yet processed and every dependency in ``whole_template`` (RNG included) is
  processed, i.e. it could be defined by the next sentence.
* ``nece_next``: ``can_next`` and ``nece``.

Choices where the official code (``lora_label_with_parser``) is ambiguous or quirky, documented:

* ``can_next`` is defined exactly as the official topological walk: RNG is processed at row 0, so
  constants are ``can_next`` from row 0 on; parameters without any dependency (instance pairs that
  are not structure edges, abstract parameters of childless items) are ``can_next`` at every row
  until defined — the official quirk, kept so labels match; ``exists`` lets callers mask them.
* Model solutions are cut at their first wrong sentence (the judge's ``first_error``, any kind);
  the official code cuts only at the first dependency error and returns no labels for other
  errors. A parameter defined when it is not computable, or defined twice, also ends the rows
  (the official code gives up there).
* Rows map to tokens through :func:`sentence_end_positions`: row 0 is the ``<solution>`` marker,
  row r is the ``.`` that ends sentence ``labels.sentences[r]``.

Pair labels (independent of the solution): ``dep[a, b] = 1`` iff a depends on b transitively in
``whole_template`` (RNG ignored), ``neighbor[a, b]`` the direct dependencies only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from physics_lm.data.igsm.text.judge import judge_problem
from physics_lm.data.igsm.text.parser import MOD, RNG, Param, Problem
from physics_lm.data.igsm.text.vocab import Vocab

ROW_KEYS = ("nece", "known", "value", "can_next", "nece_next")


@dataclass(frozen=True, eq=False)
class ProbeLabels:
    """Row labels; every array is [R, P] int32 with R rows and P = len(problem.all_param)."""

    params: tuple[Param, ...]  # the P columns (problem.all_param)
    defined: tuple[Param, ...]  # the parameter processed at rows 1..R-1
    sentences: tuple[int, ...]  # sentence index that ends each row (-1 for row 0)
    truncated: bool  # the solution went on past its last labelled (correct) sentence
    exists: np.ndarray  # [P] bool: False for instance pairs that are not structure edges
    nece: np.ndarray
    known: np.ndarray
    value: np.ndarray
    can_next: np.ndarray
    nece_next: np.ndarray

    def stack(self, keys: Sequence[str] = ROW_KEYS) -> np.ndarray:
        """[R, P, K] array in the official ``lora_label`` layout."""
        return np.stack([getattr(self, k) for k in keys], axis=-1)


def correct_prefix(problem: Problem, solution: str) -> tuple[list[tuple[int, Param]], bool]:
    """(sentence index, param) of the solution's named sentences before its first wrong one.

    Returns the list and whether anything was cut off.
    """
    trace: list[tuple[int, Param]] = []
    verdict = judge_problem(problem, solution, trace=trace)
    if verdict.first_error is None:
        return trace, False
    kept = [t for t in trace if t[0] < verdict.first_error]
    return kept, True


def row_labels(problem: Problem, solution: str | Sequence[Param] | None = None) -> ProbeLabels:
    """Row labels along a solution text, an explicit parameter order, or (None) row 0 only."""
    if solution is None:
        steps, cut = [], False
    elif isinstance(solution, str):
        steps, cut = correct_prefix(problem, solution)
    else:
        steps, cut = list(enumerate(solution)), False
    params = problem.all_param
    index = problem.param_index
    n_params = len(params)
    in_degree = {p: len(problem.deps[p]) for p in params}
    successors: dict[Param, list[Param]] = {RNG: []}
    for p in params:
        for d in problem.deps[p]:
            successors.setdefault(d, []).append(p)
    ready = {p for p, d in in_degree.items() if d == 0} | {RNG}
    nece = np.array([p in problem.necessary for p in params], dtype=np.int32)
    rows_known, rows_value, rows_next = [], [], []
    known = np.zeros(n_params, np.int32)
    value = np.full(n_params, MOD, np.int32)
    defined: list[Param] = []
    sentences = [-1]
    for n, p in [(-1, RNG), *steps]:
        if p not in ready:  # not computable yet, or already defined: the walk cannot go on
            cut = True
            break
        ready.discard(p)
        for q in successors.get(p, ()):
            in_degree[q] -= 1
            if in_degree[q] == 0:
                ready.add(q)
        if p != RNG:
            known[index[p]] = 1
            value[index[p]] = problem.values.get(p, MOD)
            defined.append(p)
            sentences.append(n)
        can_next = np.zeros(n_params, np.int32)
        can_next[[index[q] for q in ready if q != RNG]] = 1
        rows_known.append(known.copy())
        rows_value.append(value.copy())
        rows_next.append(can_next)
    can = np.stack(rows_next)
    return ProbeLabels(
        params=params,
        defined=tuple(defined),
        sentences=tuple(sentences),
        truncated=cut,
        exists=np.array([problem.exists(p) for p in params]),
        nece=np.broadcast_to(nece, can.shape).copy(),
        known=np.stack(rows_known),
        value=np.stack(rows_value),
        can_next=can,
        nece_next=can * nece,
    )


def pair_labels(problem: Problem) -> dict[str, np.ndarray]:
    """``dep`` (transitive) and ``neighbor`` (direct) [P, P] int32 matrices over all_param."""
    params, index = problem.all_param, problem.param_index
    n = len(params)
    neighbor = np.zeros((n, n), np.int32)
    for p in params:
        for d in problem.deps[p]:
            if d != RNG:
                neighbor[index[p], index[d]] = 1
    dep = neighbor.copy()
    while True:  # transitive closure by repeated squaring (n <= 72)
        nxt = ((dep + dep @ dep) > 0).astype(np.int32)
        if np.array_equal(nxt, dep):
            return {"dep": dep, "neighbor": neighbor}
        dep = nxt


def sentence_end_positions(ids: Sequence[int], vocab: Vocab) -> tuple[int | None, list[int]]:
    """Token positions for the rows: (index of ``<solution>``, index of the ``.`` that ends each
    solution sentence, in the order of the text's ``". "`` split, BACK sentences included)."""
    ids = [int(i) for i in ids]
    if vocab.sol_id not in ids:
        return None, []
    start = ids.index(vocab.sol_id)
    dot = vocab.word_to_id(".")
    ends = []
    for pos in range(start + 1, len(ids)):
        if ids[pos] in (vocab.ans_id, vocab.eos_id):
            break
        if ids[pos] == dot:
            ends.append(pos)
    return start, ends
