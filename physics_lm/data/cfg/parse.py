"""One parse tree of a string under a layered Part 1 grammar, on the host.

Membership (membership.py) only says *whether* a string derives; the subtree-diversity metric
needs *a* derivation. Because every rule goes exactly one level down, a memoised top-down
search is enough: `ends(l, s, i)` = the positions e such that symbol s of level l derives
tokens[i:e], computed only for the (level, symbol, start) triples reachable from the root, then
one derivation is read back by always taking the first rule and the shortest first split that
still completes. On an ambiguous grammar that is one of several parses (the same choice rule for
every string, so model and true strings are treated alike); on an unambiguous one (cfg3b) it is
the generating tree.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np

from physics_lm.data.cfg.grammar import Grammar
from physics_lm.data.cfg.reference import HostTree

Span = tuple[int, int, int]  # (symbol, start, end) of one node


def _ends_fn(grammar: Grammar, tokens: Sequence[int]):
    """`ends(level, sym, start) -> sorted tuple of ends`, memoised per string."""
    D, n, memo = grammar.depth, len(tokens), {}

    def ends(level: int, sym: int, i: int) -> tuple[int, ...]:
        if level == D:
            return (i + 1,) if i < n and tokens[i] == sym + 1 else ()
        key = (level, sym, i)
        if key not in memo:
            out: set[int] = set()
            for rule in grammar.rules[level][sym]:
                cur = {i}
                for child in rule:
                    cur = {e for p in cur for e in ends(level + 1, child, p)}
                    if not cur:
                        break
                out |= cur
            memo[key] = tuple(sorted(out))
        return memo[key]

    return ends


def _split(ends, level: int, rule: tuple[int, ...], i: int, e: int) -> list[int] | None:
    """Child boundaries [i, p1, .., e] of `rule` (children on `level`) covering tokens[i:e]."""
    if not rule:
        return [i] if i == e else None
    for p in ends(level, rule[0], i):
        if p > e:
            break
        rest = _split(ends, level, rule[1:], p, e)
        if rest is not None:
            return [i, *rest]
    return None


def parse_spans(grammar: Grammar, tokens: Sequence[int]) -> list[list[Span]] | None:
    """A derivation as nodes per level 0..D, left to right, or None if `tokens` is no member.

    Args:
      grammar: the grammar.
      tokens: terminal ids 1..num_sym, no BOS/EOS.

    Returns:
      spans[l] = [(local symbol, start, end), ...] of the level-l nodes; spans[D] the tokens.
    """
    tokens = [int(t) for t in tokens]
    ends = _ends_fn(grammar, tokens)
    n = len(tokens)
    if n == 0 or n not in ends(0, 0, 0):
        return None
    spans: list[list[Span]] = [[(0, 0, n)]]
    for level in range(grammar.depth):
        below: list[Span] = []
        for sym, i, e in spans[level]:
            for rule in grammar.rules[level][sym]:
                cuts = _split(ends, level + 1, rule, i, e)
                if cuts is not None:
                    below += [(c, a, b) for c, a, b in zip(rule, cuts[:-1], cuts[1:], strict=True)]
                    break
            else:  # cannot happen: ends() said the span derives
                raise AssertionError(f"level {level} symbol {sym} span {(i, e)} has no split")
        spans.append(below)
    return spans


def spans_to_tree(spans: list[list[Span]]) -> HostTree:
    """The level-by-level HostTree (reference.py) of `parse_spans`'s nodes."""
    sym = [np.array([s for s, _, _ in level]) for level in spans]
    parent = [np.zeros(1, np.int64)]
    for upper, lower in itertools.pairwise(spans):
        starts = np.array([a for _, a, _ in upper])
        parent.append(np.searchsorted(starts, [a for _, a, _ in lower], side="right") - 1)
    return HostTree(sym, parent)
