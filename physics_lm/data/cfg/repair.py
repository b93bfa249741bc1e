"""Minimal number of prefix substitutions that make a string valid (SPEC §3.3 / §7), on the host.

The corrupted-prefix protocol's stricter score: a completion counts only if prefix + completion
can be made a member by changing at most as many prefix tokens as were corrupted. This is the
official `solve_dp_noneq` (substitution distance) restricted like its `kill_front` option: leaf
cost 0 for the actual token, 1 for any other terminal at a prefix position, impossible (inf) at
completion positions. It is the boolean CYK of membership.py in the (min, +) semiring, which has no
matmul, so it runs in numpy over diagonal-band charts C[s, i, w] = cost of s => tokens[i:i+w].
As in membership.py, the root and level 1 are swept as row vectors over the level-2 charts.

Legend: N = L + 1 fence positions, S symbols on a level, W + 1 span widths kept for a level.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from physics_lm.data.cfg.grammar import Grammar
from physics_lm.data.cfg.membership import level_max_widths


def _minplus(x_NxW: np.ndarray, y_NxW: np.ndarray, w_out: int) -> np.ndarray:
    """out[i, w] = min_a x[i, a] + y[i + a, w - a], widths up to w_out (inf = impossible)."""
    n = x_NxW.shape[0]
    out = np.full((n, w_out + 1), np.inf)
    y_pad = np.concatenate([y_NxW, np.full((x_NxW.shape[1], y_NxW.shape[1]), np.inf)])
    for a in range(1, x_NxW.shape[1]):
        if not np.isfinite(x_NxW[:, a]).any():
            continue
        wy = min(y_NxW.shape[1], w_out + 1 - a)
        cand = x_NxW[:, a, None] + y_pad[a : a + n, :wy]
        np.minimum(out[:, a : a + wy], cand, out=out[:, a : a + wy])
    return out


def _vec_minplus(v_N: np.ndarray, c_NxW: np.ndarray) -> np.ndarray:
    """out[j] = min_i v[i] + c[i, j - i]."""
    n = len(v_N)
    out = np.full(n, np.inf)
    for w in range(1, c_NxW.shape[1]):
        np.minimum(out[w:], v_N[: n - w] + c_NxW[: n - w, w], out=out[w:])
    return out


def min_prefix_repairs(grammar: Grammar, tokens: Sequence[int], prefix_len: int) -> float:
    """Fewest substitutions among tokens[:prefix_len] that make `tokens` a member.

    Args:
      grammar: the grammar.
      tokens: terminal ids (any ints; a non-terminal id in the prefix costs 1, after it is fatal).
      prefix_len: positions < prefix_len may be changed (0: plain membership, 0 or inf).

    Returns:
      The minimal count (0 iff already a member), or inf if no prefix change helps (the
      completion is broken, or the length is not derivable).
    """
    n_tok = len(tokens)
    if not 1 <= n_tok <= grammar.max_len:
        return float("inf")
    widths = [min(w, n_tok) for w in level_max_widths(grammar)]
    n = n_tok + 1
    leaf = np.full((grammar.num_sym, n, 2), np.inf)
    for i, t in enumerate(tokens):
        if i < prefix_len:
            leaf[:, i, 1] = 1.0
        if isinstance(t, int | np.integer) and 1 <= t <= grammar.num_sym:
            leaf[t - 1, i, 1] = 0.0
    chart_level = min(2, grammar.depth)
    chart = leaf
    for level in range(grammar.depth - 1, chart_level - 1, -1):
        pairs: dict[tuple[int, ...], np.ndarray] = {}
        nxt = np.full((grammar.sizes[level], n, widths[level] + 1), np.inf)
        for a, rules in enumerate(grammar.rules[level]):
            for rule in rules:
                if len(rule) == 1:
                    term = chart[rule[0]]
                else:
                    if rule[:2] not in pairs:
                        pairs[rule[:2]] = _minplus(chart[rule[0]], chart[rule[1]], widths[level])
                    term = pairs[rule[:2]]
                    if len(rule) == 3:
                        term = _minplus(term, chart[rule[2]], widths[level])
                w = min(term.shape[1], nxt.shape[2])
                np.minimum(nxt[a, :, :w], term[:, :w], out=nxt[a, :, :w])
        chart = nxt

    def advance(level: int, sym: int, v_N: np.ndarray) -> np.ndarray:
        if level == chart_level:
            return _vec_minplus(v_N, chart[sym])
        out = np.full_like(v_N, np.inf)
        for rule in grammar.rules[level][sym]:
            w = v_N
            for child in rule:
                w = advance(level + 1, child, w)
            np.minimum(out, w, out=out)
        return out

    start = np.full(n, np.inf)
    start[0] = 0.0
    return float(advance(0, 0, start)[n_tok])
