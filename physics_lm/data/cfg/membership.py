"""Batched membership check for the layered Part 1 grammars (SPEC §3.4), jittable in JAX.

The official `solve_dp_noneq_fast` is a pure-Python CYK taking 4-35 s per string. Because every
rule goes exactly one level down, CYK needs no loop over span lengths: level l's chart is an OR over
rules of products of level l+1 charts, computed in D rounds.

Charts are *diagonal bitsets*: a level-l symbol only derives spans whose length lies in the level's
yield band [lo_l, hi_l] (e.g. 8..27 three levels above the terminals of cfg3f), so chart[s, :, i]
holds one bit per span length d in that band for spans starting at i, packed into uint32 words.
A product X·Y ("X derives (i, i+d1), Y derives (i+d1, i+d1+d2)") is then, for each of X's bits a,
a masked shift-OR of Y read a + lo_X positions to the right: elementwise integer work over
[batch, terms, positions] arrays, ~32x less data than boolean floats and no wasted band blocks.
The root and level 1 are never charted: they are swept left to right as row vectors (the set of
reachable end positions) through the level-2 charts, since a level-1 chart would be the widest.

Legend: B batch, S symbols on a level, T stacked product terms, W uint32 words of a band, P start
positions (= padded length L), n bits of a band.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from physics_lm.data.cfg.grammar import Grammar

# Static padded lengths: each is one compile per (grammar, batch shape). Powers of two: compiles
# (seconds each on CPU) cost more than the padding does.
BUCKETS = (64, 128, 256, 512, 1024, 2048, 4096)
_BITS = 32


def level_max_widths(grammar: Grammar) -> tuple[int, ...]:
    """Longest yield of any symbol on each level 0..D (why: it bounds the chart band per level)."""
    widths = [np.ones(grammar.num_sym, np.int64)]
    for level in reversed(grammar.rules):
        below = widths[0]
        widths.insert(0, np.array([max(int(below[list(r)].sum()) for r in rs) for rs in level]))
    return tuple(int(w.max()) for w in widths)


def level_bands(grammar: Grammar) -> tuple[tuple[int, int], ...]:
    """(lo, hi) span-length band per level 0..D. lo is a lower bound built so that every rule's
    product lands at or above it (min rule length x lo below), hi the exact longest yield."""
    lo = [1]
    for level in reversed(grammar.rules):
        lo.insert(0, min(len(r) for rs in level for r in rs) * lo[0])
    return tuple(zip(lo, level_max_widths(grammar), strict=True))


def _words(n: int) -> int:
    return -(-n // _BITS)


def _shift_words(x: jax.Array, s: int, w_out: int) -> jax.Array:
    """Bitset [..., W, P] shifted up by s bits into w_out words (bits beyond w_out drop)."""
    q, r = divmod(s, _BITS)
    out = [jnp.zeros(x.shape[:-2] + x.shape[-1:], jnp.uint32) for _ in range(w_out)]
    for k in range(x.shape[-2]):
        if k + q < w_out:
            out[k + q] = out[k + q] | (x[..., k, :] << r)
        if r and k + q + 1 < w_out:
            out[k + q + 1] = out[k + q + 1] | (x[..., k, :] >> (_BITS - r))
    return jnp.stack(out, axis=-2)


def _product(x: jax.Array, x_lo: int, x_n: int, y: jax.Array, y_n: int, w_out: int) -> jax.Array:
    """Z[i] bit (a + c) = OR_a X[i] bit a AND Y[i + x_lo + a] bit c, for bitsets [..., W, P].

    X bit a = span (i, i + x_lo + a); Y bit c = span length y_lo + c, so Z's band starts at
    x_lo + y_lo. One masked shift-OR per bit of X (static loop, fused by XLA)."""
    P, w_y = y.shape[-1], y.shape[-2]
    pad = x_lo + x_n - 1
    y_pad = jnp.pad(y, [(0, 0)] * (y.ndim - 1) + [(0, pad)])
    out = [jnp.zeros((*y.shape[:-2], P), jnp.uint32) for _ in range(w_out)]
    for a in range(x_n):
        q, r = divmod(a, _BITS)
        mask = ((x[..., q, :] >> r) & 1) * jnp.uint32(0xFFFFFFFF)
        y_a = jax.lax.slice_in_dim(y_pad, x_lo + a, x_lo + a + P, axis=-1)
        for k in range(w_y):
            if k + q >= w_out:
                break
            yk = y_a[..., k, :] & mask
            out[k + q] = out[k + q] | (yk << r)
            if r and k + q + 1 < w_out:
                out[k + q + 1] = out[k + q + 1] | (yk >> (_BITS - r))
    return jnp.stack(out, axis=-2)


def _leaf_chart(grammar: Grammar, tokens_BxL: jax.Array, length_B: jax.Array,
                wild_B: jax.Array) -> jax.Array:
    """Terminal chart [B, S_D, 1, L]: t derives span (i, i+1) iff token i == t + 1 (or the
    position lies in the wildcard prefix), for positions inside the string."""
    L = tokens_BxL.shape[1]
    pos = jnp.arange(L)
    in_str = pos[None] < jnp.minimum(length_B, L)[:, None]
    term = jnp.arange(1, grammar.num_sym + 1)
    match = (tokens_BxL[:, None, :] == term[None, :, None]) | (pos[None] < wild_B[:, None])[:, None]
    return (match & in_str[:, None, :]).astype(jnp.uint32)[:, :, None, :]


def _level_chart(grammar: Grammar, level: int, chart: jax.Array, L: int) -> jax.Array:
    """Chart of `level` [B, S_l, W_l, L] from the chart of level + 1 (bands: `level_bands`)."""
    bands = level_bands(grammar)
    (lo, hi), (lo_c, hi_c) = bands[level], bands[level + 1]
    n_c = max(1, min(hi_c, L) - lo_c + 1)
    n = max(1, min(hi, L) - lo + 1)
    w = _words(n)
    rules = grammar.rules[level]
    pairs = sorted({r[:2] for rs in rules for r in rs if len(r) >= 2})
    triples = sorted({r for rs in rules for r in rs if len(r) == 3})
    term: dict[tuple[int, ...], jax.Array] = {}
    if pairs:
        px, py = (np.array(c) for c in zip(*pairs, strict=True))
        n_p = 2 * n_c - 1
        prod = _product(chart[:, px], lo_c, n_c, chart[:, py], n_c, _words(n_p))
        placed = _shift_words(prod, 2 * lo_c - lo, w)
        term.update({p: placed[:, t] for t, p in enumerate(pairs)})
    if triples:
        pair_idx = np.array([pairs.index(t[:2]) for t in triples])
        tz = np.array([t[2] for t in triples])
        # X = the pair's chart (band starting at 2 lo_c), shifted into the level band directly.
        x = prod[:, pair_idx]
        tri = _product(x, 2 * lo_c, 2 * n_c - 1, chart[:, tz], n_c, _words(3 * n_c - 2))
        placed3 = _shift_words(tri, 3 * lo_c - lo, w)
        term.update({t: placed3[:, k] for k, t in enumerate(triples)})
    for rs in rules:
        for r in rs:
            if len(r) == 1 and r not in term:
                term[r] = _shift_words(chart[:, r[0]], lo_c - lo, w)
    syms = []
    for rs in rules:
        acc = term[tuple(rs[0])]
        for r in rs[1:]:
            acc = acc | term[tuple(r)]
        syms.append(acc)
    return jnp.stack(syms, axis=1)


def _by_position(chart: jax.Array, n: int, L: int) -> jax.Array:
    """Bits-along-lengths chart [B, S, W, L] -> bits-along-positions [B, S, n, V] (V words cover
    fence posts 0..L): what the row-vector sweep needs, one word op per 32 start positions."""
    k = np.arange(n)
    words = jnp.take(chart, k // _BITS, axis=2)
    bits = (words >> jnp.asarray(k % _BITS, jnp.uint32)[:, None]) & 1  # [B, S, n, L]
    V = _words(L + 1)
    bits = jnp.pad(bits, [(0, 0)] * 3 + [(0, V * _BITS - L)]).reshape(*bits.shape[:3], V, _BITS)
    return jnp.sum(bits << jnp.arange(_BITS, dtype=jnp.uint32), axis=-1, dtype=jnp.uint32)


def _advance(v_BxV: jax.Array, c_BxnxV: jax.Array, lo: int) -> jax.Array:
    """Reachable ends after one symbol, as position bitsets: v' = OR_k (v & C_k) << (lo + k),
    where C_k marks the start positions of derivable spans of length lo + k."""
    n, V = c_BxnxV.shape[1:]
    t = v_BxV[:, None, :] & c_BxnxV  # [B, n, V]
    q, r = np.divmod(lo + np.arange(n), _BITS)
    pad = int(q.max()) + 1
    t = jnp.pad(t, ((0, 0), (0, 0), (pad, 0)))
    j = np.arange(V)[None, :]
    low = jnp.take_along_axis(t, jnp.asarray(j - q[:, None] + pad)[None], axis=2)
    high = jnp.take_along_axis(t, jnp.asarray(j - q[:, None] + pad - 1)[None], axis=2)
    r_u = jnp.asarray(r, jnp.uint32)[None, :, None]
    carry = jnp.where(r_u > 0, high >> jnp.where(r_u > 0, _BITS - r_u, 0), 0)
    out = (low << r_u) | carry
    return jax.lax.reduce(out, np.uint32(0), jax.lax.bitwise_or, (1,))


@functools.partial(jax.jit, static_argnames=("grammar",))
def is_member(
    grammar: Grammar,
    tokens_BxL: jax.Array,
    length_B: jax.Array,
    wildcard_prefix_len_B: jax.Array | None = None,
) -> jax.Array:
    """Whether each padded string is a complete string of `grammar` (official `dp_correct == 0`).

    Args:
      grammar: the grammar (static; hashable frozen dataclass).
      tokens_BxL: int32 token ids; entries at positions >= length are ignored. Any id outside
        1..num_sym (0, EOS, BOS, negatives, huge values) matches no terminal, so the string is
        simply not a member.
      length_B: true lengths. A length > L cannot be checked from an L-wide array, and such rows
        return False (the host wrapper `check_strings` never produces them). Length 0 -> False,
        as in the official DP.
      wildcard_prefix_len_B: optional; positions < this value accept *every* terminal. This is the
        corrupted-prefix score (SPEC §7): True iff the completion (positions >= the prefix) can
        be kept and only prefix tokens changed to obtain a member.

    Returns:
      bool[B].
    """
    B, L = tokens_BxL.shape
    wild_B = jnp.zeros((B,), jnp.int32) if wildcard_prefix_len_B is None else wildcard_prefix_len_B
    chart = _leaf_chart(grammar, tokens_BxL.astype(jnp.int32), length_B, wild_B)
    chart_level = min(2, grammar.depth)
    for level in range(grammar.depth - 1, chart_level - 1, -1):
        chart = _level_chart(grammar, level, chart, L)
    lo, hi = level_bands(grammar)[chart_level]
    sweep = _by_position(chart, max(1, min(hi, L) - lo + 1), L)  # [B, S, n, V]
    start = jnp.zeros((B, sweep.shape[-1]), jnp.uint32).at[:, 0].set(1)

    def advance(level: int, sym: int, v: jax.Array) -> jax.Array:
        if level == chart_level:
            return _advance(v, sweep[:, sym], lo)
        out = jnp.zeros_like(v)
        for rule in grammar.rules[level][sym]:
            w = v
            for child in rule:
                w = advance(level + 1, child, w)
            out = out | w
        return out

    total = advance(0, 0, start)
    n_B = jnp.clip(length_B, 0, L)
    word = jnp.take_along_axis(total, (n_B // _BITS)[:, None], axis=1)[:, 0]
    hit_B = ((word >> (n_B % _BITS).astype(jnp.uint32)) & 1) > 0
    return hit_B & (length_B >= 1) & (length_B <= L)


def bucket_length(n: int) -> int:
    """Smallest static padded length >= n (multiples of 1024 beyond the table)."""
    for size in BUCKETS:
        if n <= size:
            return size
    return -(-n // 1024) * 1024


def check_strings(
    grammar: Grammar,
    strings: Sequence[Sequence[int]],
    *,
    wildcard_prefix_lens: Sequence[int] | None = None,
    max_batch_elems: int | None = None,
) -> np.ndarray:
    """Host wrapper: membership of ragged Python token lists, bucketed to limit recompiles.

    Strings longer than `grammar.max_len` (the longest string the grammar can derive) or shorter
    than `grammar.min_len` are answered False without running the DP, so there is no upper length
    limit; in between the chart is exact. Strings are grouped by padded length (`BUCKETS`) and run
    in sub-batches of one static size per bucket (a power of two that keeps the level-1 sweep near
    `max_batch_elems` floats; 1 when the call has a single string), so new lengths rarely
    recompile; short groups are padded with empty rows rather than compiled anew.

    Args:
      grammar: the grammar.
      strings: token lists (terminal ids, no BOS/EOS); any ints are accepted.
      wildcard_prefix_lens: optional per-string prefix-repair lengths (see `is_member`).
      max_batch_elems: memory budget per batch, in float32 elements of the swept level-2 chart
        (default 2^22 on CPU, 2^28 on accelerators).

    Returns:
      bool[len(strings)].
    """
    on_cpu = jax.default_backend() == "cpu"
    max_batch_elems = max_batch_elems or (2**22 if on_cpu else 2**28)
    out = np.zeros(len(strings), bool)
    wild = np.zeros(len(strings), np.int64)
    if wildcard_prefix_lens is not None:
        wild[:] = wildcard_prefix_lens
    by_bucket: dict[int, list[int]] = {}
    for i, s in enumerate(strings):
        if grammar.min_len <= len(s) <= grammar.max_len:
            by_bucket.setdefault(bucket_length(len(s)), []).append(i)
    level = min(2, grammar.depth)
    lo, hi = level_bands(grammar)[level]
    for size, idx in sorted(by_bucket.items()):
        n = max(1, min(hi, size) - lo + 1)
        per_string = (grammar.sizes[level] + 1) * n * (size + n)
        cap = max(1, 2 ** int(np.log2(max(1, max_batch_elems // per_string))))
        for start in range(0, len(idx), cap):
            chunk = idx[start : start + cap]
            bsz = 1 if len(strings) == 1 else cap  # one batch shape per bucket for batched calls
            tokens = np.zeros((bsz, size), np.int32)
            lengths = np.zeros((bsz,), np.int32)
            for r, i in enumerate(chunk):
                # Any id outside the terminals (even beyond int64) must not wrap onto one: use 0.
                tokens[r, : len(strings[i])] = [
                    t if isinstance(t, int | np.integer) and 1 <= t <= grammar.num_sym else 0
                    for t in strings[i]]
                lengths[r] = len(strings[i])
            wild_b = np.zeros((bsz,), np.int32)
            wild_b[: len(chunk)] = np.clip(wild[chunk], 0, size)
            res = is_member(grammar, jnp.asarray(tokens, jnp.int32), jnp.asarray(lengths),
                            jnp.asarray(wild_b))
            out[chunk] = np.asarray(res)[: len(chunk)]
    return out
