"""Exact next-token distributions under a Part 1 grammar (SPEC §4), and the KL / entropy metrics.

For a string, row r is P(token r | tokens[:r]) over {EOS, 1..num_sym} with uniform rule choice,
as the official `solve_dp_prob_highprecision` (demo2) computes with 100-digit Decimals. Here it is
float64 numpy on the host, in matrix form:
  1. inside charts I_l[s][i, j] = P(s =>* tokens[i:j]) for levels D..2, as banded matmuls;
  2. left-context mass pi_l[s][k] (an s node starts at k, tokens[:k] produced left of it), pushed
     top-down as row vector x matrix products; levels 0 and 1 never need a chart, since a row
     vector times I_1[s] is a sum of chains of row vectors times level-2 charts.
Row r is [I_0[root][0, r], pi_D[t][r] for t] normalised by its sum (= P(prefix of length r)).

Underflow: P(string) reaches ~1e-315 on long cfg3j strings, so every span is scaled by s^width
(s = e^{entropy rate}), a diagonal similarity D^-1 I D that commutes with the products; each row
carries a common factor s^r that the normalisation removes.

Legend: N = L + 1 fence positions, S symbols on a level, C = num_sym + 1 columns (EOS first).
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import math
from collections.abc import Iterator, Sequence

import numpy as np

from physics_lm.data.cfg.grammar import Grammar
from physics_lm.data.cfg.membership import level_max_widths

_ROW_BLOCK = 128


@functools.cache
def _openblas_thread_setters() -> tuple | None:
    """(get, set) of the OpenBLAS that numpy loaded, found in /proc/self/maps; None elsewhere."""
    try:
        with open("/proc/self/maps") as f:
            paths = {line.split()[-1] for line in f if "openblas" in line.lower()}
    except OSError:
        return None
    for path in sorted(paths):
        lib = ctypes.CDLL(path)
        for prefix in ("scipy_openblas", "openblas"):
            for suffix in ("64_", ""):
                get = getattr(lib, f"{prefix}_get_num_threads{suffix}", None)
                put = getattr(lib, f"{prefix}_set_num_threads{suffix}", None)
                if get is not None and put is not None:
                    return get, put
    return None


@contextlib.contextmanager
def _single_threaded_blas() -> Iterator[None]:
    """One BLAS thread while the DP runs, restored after.

    Why: the DP is hundreds of small (~64 x 300 x 600) products; OpenBLAS's spinning worker
    threads make them ~10x slower on a loaded 2-core machine, and they gain nothing unloaded.
    """
    setters = _openblas_thread_setters()
    if setters is None:
        yield
        return
    get, put = setters
    before = get()
    put(1)
    try:
        yield
    finally:
        put(before)


def entropy_rate(grammar: Grammar) -> float:
    """Expected -log P(derivation) per token (nats), the scale that keeps spans near 1."""
    log_w = np.zeros(grammar.num_sym)
    length = np.ones(grammar.num_sym)
    for level in reversed(grammar.rules):
        log_w = np.array([math.log(len(rs)) + np.mean([log_w[list(r)].sum() for r in rs])
                          for rs in level])
        length = np.array([np.mean([length[list(r)].sum() for r in rs]) for rs in level])
    return float(log_w[0] / length[0])


def _band_matmul(x_NxN: np.ndarray, y_NxN: np.ndarray, wx: int, wy: int) -> np.ndarray:
    """X @ Y for upper-banded X (nonzero only for 0 < j - i <= wx) and Y (<= wy), by row blocks."""
    n = x_NxN.shape[0]
    out = np.zeros_like(x_NxN)
    for r0 in range(0, n, _ROW_BLOCK):
        r1 = min(n, r0 + _ROW_BLOCK)
        mid = min(n, r1 + wx)
        c1 = min(n, mid + wy)
        out[r0:r1, r0:c1] = x_NxN[r0:r1, r0:mid] @ y_NxN[r0:mid, r0:c1]
    return out


def _inside_charts(grammar: Grammar, tokens: np.ndarray, scale: float) -> dict[int, np.ndarray]:
    """Scaled inside charts {level: float64[S_l, N, N]} for levels D down to min(2, D)."""
    n = len(tokens) + 1
    widths = level_max_widths(grammar)
    leaf = np.zeros((grammar.num_sym, n, n))
    pos = np.arange(len(tokens))
    for t in range(grammar.num_sym):
        hit = pos[tokens == t + 1]
        leaf[t, hit, hit + 1] = scale
    charts = {grammar.depth: leaf}
    for level in range(grammar.depth - 1, min(2, grammar.depth) - 1, -1):
        below, wb = charts[level + 1], widths[level + 1]
        pair_cache: dict[tuple[int, int], np.ndarray] = {}
        chart = np.zeros((grammar.sizes[level], n, n))
        for a, rules in enumerate(grammar.rules[level]):
            for rule in rules:
                if len(rule) == 1:
                    term = below[rule[0]]
                else:
                    key = rule[:2]
                    if key not in pair_cache:
                        pair_cache[key] = _band_matmul(below[key[0]], below[key[1]], wb, wb)
                    term = pair_cache[key]
                    if len(rule) == 3:
                        term = _band_matmul(term, below[rule[2]], 2 * wb, wb)
                chart[a] += term / len(rules)
        charts[level] = chart
    return charts


def _vec_times(grammar: Grammar, charts: dict[int, np.ndarray], level: int, sym: int,
               v_N: np.ndarray) -> np.ndarray:
    """v @ I_level[sym], recursing through rules above the lowest stored chart."""
    if level in charts:
        return v_N @ charts[level][sym]
    rules = grammar.rules[level][sym]
    out = np.zeros_like(v_N)
    for rule in rules:
        w = v_N
        for child in rule:
            w = _vec_times(grammar, charts, level + 1, child, w)
        out += w / len(rules)
    return out


def next_token_probs(grammar: Grammar, tokens: Sequence[int]) -> np.ndarray:
    """Exact P(next | prefix) rows for every prefix of `tokens` (SPEC §4.1 layout).

    Args:
      grammar: the grammar.
      tokens: terminal ids, no BOS/EOS. Any ints are accepted.

    Returns:
      float64[L + 1, num_sym + 1]; row r = distribution of token r given tokens[:r], column 0 = EOS,
      column t = terminal t. Rows whose prefix tokens[:r] no derivation starts with (a flipped
      token, an id outside the terminals) are NaN: the official DP raises there instead
      (`prefix_is_valid` turns them into a mask).
    """
    tok = np.array([t if isinstance(t, int | np.integer) and 1 <= t <= grammar.num_sym else 0
                    for t in tokens], np.int64)
    with _single_threaded_blas():
        return _next_token_rows(grammar, tok)


def _next_token_rows(grammar: Grammar, tok: np.ndarray) -> np.ndarray:
    n = len(tok) + 1
    charts = _inside_charts(grammar, tok, math.exp(entropy_rate(grammar)))
    start_N = np.zeros(n)
    start_N[0] = 1.0
    eos_N = _vec_times(grammar, charts, 0, 0, start_N)
    pi = [start_N[None]]  # pi[l]: float64[S_l, N]
    for level in range(grammar.depth):
        nxt = np.zeros((grammar.sizes[level + 1], n))
        for a, rules in enumerate(grammar.rules[level]):
            for rule in rules:
                w = pi[level][a] / len(rules)
                for i, child in enumerate(rule):
                    nxt[child] += w
                    if i + 1 < len(rule):
                        w = _vec_times(grammar, charts, level + 1, child, w)
        pi.append(nxt)
    rows_NxC = np.concatenate([eos_N[:, None], pi[grammar.depth].T], axis=1)
    total_N = rows_NxC.sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        rows_NxC = rows_NxC / total_N
    rows_NxC[~(total_N[:, 0] > 0)] = np.nan
    return rows_NxC


def prefix_is_valid(probs_NxC: np.ndarray) -> np.ndarray:
    """bool[N]: row r is defined, i.e. tokens[:r] is a prefix of some string of the grammar."""
    return np.isfinite(probs_NxC).all(axis=-1)


def chosen_probs(probs_NxC: np.ndarray, tokens: Sequence[int]) -> np.ndarray:
    """P of what came next at each row: probs[r, tokens[r]] for r < L, then probs[L, EOS]."""
    cols = np.append(np.asarray(tokens, np.int64), 0)
    return probs_NxC[np.arange(len(cols)), cols]


def log_prob_string(grammar: Grammar, tokens: Sequence[int]) -> float:
    """log P(tokens is the whole string) under uniform rule choice (-inf if not a member)."""
    chosen = np.nan_to_num(chosen_probs(next_token_probs(grammar, tokens), tokens), nan=0.0)
    with np.errstate(divide="ignore"):
        return float(np.log(chosen).sum())


def true_entropy(probs_NxC: np.ndarray) -> float:
    """Mean per-row entropy -sum p log p (nats) over defined rows: what a model should match."""
    p = probs_NxC[prefix_is_valid(probs_NxC)]
    with np.errstate(divide="ignore", invalid="ignore"):
        h = -np.where(p > 0, p * np.log(p), 0.0).sum(axis=-1)
    return float(h.mean()) if len(h) else float("nan")


def kl_true_vs_model(p_true_NxC: np.ndarray, q_model_NxC: np.ndarray, eps: float = 1e-5) -> float:
    """demo2's KL(p || q) per row, averaged over the rows of one string (SPEC §4.3).

    Both sides are smoothed, p_s = (p + eps) / sum(p + eps) and likewise q_s, but the weights are
    the *unsmoothed* p: sum_c p[c] (log p_s[c] - log q_s[c]). Smoothing keeps a model that puts
    ~0 mass on a true token finite, so the paper's numbers are comparable only with the same eps.
    Undefined (NaN) truth rows are skipped.
    """
    p = np.asarray(p_true_NxC, np.float64)
    q = np.asarray(q_model_NxC, np.float64)
    if p.shape != q.shape:
        raise ValueError(f"p_true shape {p.shape} != q_model shape {q.shape}")
    keep = prefix_is_valid(p)
    p, q = p[keep], q[keep]
    p_s = (p + eps) / (p + eps).sum(axis=-1, keepdims=True)
    q_s = (q + eps) / (q + eps).sum(axis=-1, keepdims=True)
    kl = (p * (np.log(p_s) - np.log(q_s))).sum(axis=-1)
    return float(kl.mean()) if len(kl) else float("nan")


def model_rows_from_logits(grammar: Grammar, logits_NxV: np.ndarray) -> np.ndarray:
    """Model next-token rows in the truth's layout, from logits at [BOS, t_0, ..., t_{L-1}].

    The softmax is restricted to {EOS, 1..num_sym} (the model's EOS id is grammar.eos_id, not 0)
    and EOS goes to column 0, so rows line up with `next_token_probs` (SPEC §4.3).

    Args:
      grammar: the grammar.
      logits_NxV: float[..., L + 1, V] with V > eos_id.

    Returns:
      float64[..., L + 1, num_sym + 1].
    """
    logits = np.asarray(logits_NxV, np.float64)
    cols = np.array([grammar.eos_id, *range(1, grammar.num_sym + 1)])
    z = logits[..., cols]
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)
