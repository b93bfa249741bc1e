"""Retry solutions of Part 2.2 on the host: reading them, and which wrong parameters are legal.

A retry solution is a correct solution with ``Define <X> as BACK.`` sentences inserted before
correct sentences (SPEC §16). Before correct sentence r (0-based; label row r of
`probe_labels.row_labels`) each kind draws its wrong parameters, without repetition at that spot,
from:

* ``retry`` (official `id_retry_gen`): parameters of ``all_param`` with ``can_next = 0`` at row r
  that are not defined yet -- existing parameters that cannot be computed yet;
* ``retry_weak`` (official `id_retry_weak_gen`, ``self_contain=True``): the necessary parameters
  at solution positions r, r+1, ... (the one about to be defined included);
* ``retry_miss``: every existing parameter (``exists``: a structure edge, or any abstract
  parameter) not defined yet, computable or not.

The number of insertions at a spot is a truncated geometric count: another one with probability
``retry_rate`` while candidates remain (`back_count_law`). The on-device sampler draws the same
sets (`gen/retry.py`); tests check it against these functions and the official corpora.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from physics_lm.data.igsm.text.parser import Param, Problem
from physics_lm.data.igsm.text.probe_labels import row_labels

RETRY_KINDS = ("retry", "retry_weak", "retry_miss")
BACK_SUFFIX = " as BACK"


def split_retry(solution: str) -> tuple[str, list[list[str]]]:
    """(the solution without its BACK sentences, the names of the wrong parameters inserted before
    each remaining sentence). BACK sentences after the last correct one are an error."""
    text = solution[1:] if solution[:1] == " " else solution
    text = text[:-1] if text[-1:] == "." else text
    clean: list[str] = []
    spots: list[list[str]] = [[]]
    for sent in text.split(". "):
        if " BACK" in sent:
            if not (sent.startswith("Define ") and sent.endswith(BACK_SUFFIX)):
                raise ValueError(f"malformed BACK sentence {sent!r}")
            spots[-1].append(sent[len("Define "):-len(BACK_SUFFIX)])
        else:
            clean.append(sent)
            spots.append([])
    if spots[-1]:
        raise ValueError(f"BACK sentences after the last correct sentence: {spots[-1]}")
    return ". ".join(clean) + ".", spots[:-1]


def retry_candidates(problem: Problem, clean_solution: str | Sequence[Param],
                     kind: str) -> list[set[Param]]:
    """The legal wrong parameters before each correct sentence of `clean_solution` (one set per
    sentence, in order), for retry kind `kind` (module docstring)."""
    if kind not in RETRY_KINDS:
        raise ValueError(f"retry kind: unknown value {kind!r} ({', '.join(RETRY_KINDS)})")
    lab = row_labels(problem, clean_solution)
    if lab.truncated:
        raise ValueError("the clean solution is not correct: candidates need its rows")
    params = lab.params
    out = []
    for r in range(len(lab.defined)):
        new = lab.known[r] == 0
        if kind == "retry":
            legal = new & (lab.can_next[r] == 0)
        elif kind == "retry_weak":
            legal = new & (lab.nece[r] == 1)
        else:
            legal = new & lab.exists
        out.append({params[i] for i in np.nonzero(legal)[0]})
    return out


def back_count_law(n_candidates: int, rate: float) -> np.ndarray:
    """P(k insertions), k = 0..n: another one with probability `rate` while candidates remain."""
    k = np.arange(n_candidates + 1)
    prob = rate ** k * (1.0 - rate)
    prob[-1] = rate ** n_candidates
    return prob
