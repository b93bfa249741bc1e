"""Batched membership check for the layered Part 1 grammars (SPEC §3.4), jittable in JAX.

The official `solve_dp_noneq_fast` is a pure-Python CYK taking 4-35 s per string. Because every
rule goes exactly one level down, CYK needs no loop over span lengths: level l's chart is an OR over
rules of products of level l+1 charts, i.e. D rounds of boolean matrix products done as float32
matmuls (exact: counts stay far below 2^24 and are clipped to 1 after every product).

Charts are stored *block-banded*, because a level-l symbol only derives spans up to its maximum
yield W_l (2-4 tokens just above the terminals): span (i, j) (fence posts, end exclusive) lives in
block (i // b, j // b - i // b), and only block offsets 0..K_l = ceil(W_l / b) are kept. A product
then costs ~P * W_x * W_out instead of P^3, which is what makes long cfg3j/k strings cheap. Block
sizes grow with the band (4 just above the terminals, up to `block`), and the root and level 1 are
never charted: they are swept left to right as row vectors (reachable end positions) through the
level-2 charts, since a level-1 chart would cost ~P^2 * W_2.

Legend: B batch, S symbols on a level, T stacked product terms, P = nb * b padded fence positions
(>= L + 1), nb blocks of b positions, K + 1 kept block offsets.
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


def level_max_widths(grammar: Grammar) -> tuple[int, ...]:
    """Longest yield of any symbol on each level 0..D (why: it bounds the chart band per level)."""
    widths = [np.ones(grammar.num_sym, np.int64)]
    for level in reversed(grammar.rules):
        below = widths[0]
        widths.insert(0, np.array([max(int(below[list(r)].sum()) for r in rs) for rs in level]))
    return tuple(int(w.max()) for w in widths)


def _band_matmul(x_TxNxKxbxb: jax.Array, y_TxNxKxbxb: jax.Array, k_out: int) -> jax.Array:
    """Block-banded product X @ Y over the last four axes, keeping block offsets 0..k_out.

    Z[I, dx + dy] += X[I, dx] @ Y[I + dx, dy]. Narrow X (<= 4 offsets): one gather of the shifted
    Y rows, one dot and a skew-sum; it compiles ~4x faster than a loop. Wide X: a scan over dx,
    which keeps memory at one shifted copy of Y.
    """
    *lead, nb, kx1, b, _ = x_TxNxKxbxb.shape
    ky1 = y_TxNxKxbxb.shape[-3]
    ax = len(lead)
    n_dx = min(kx1, k_out + 1)
    y_padded = jnp.pad(y_TxNxKxbxb, [(0, 0)] * ax + [(0, n_dx), (0, 0), (0, 0), (0, 0)])
    if n_dx <= 4:
        rows = (np.arange(nb)[:, None] + np.arange(n_dx)[None, :]).reshape(-1)
        y_skew = jnp.take(y_padded, rows, axis=ax).reshape(-1, n_dx, ky1, b, b)  # Y[I + dx, dy]
        x_m = x_TxNxKxbxb[..., :n_dx, :, :].reshape(-1, n_dx, b, b)
        contrib = jnp.einsum("mxab,mxybc->mxyac", x_m, y_skew)
        # Shift row dx right by dx along dy (pad + reshape), then sum over dx.
        m = ky1 + n_dx
        c = jnp.pad(contrib, [(0, 0), (0, 0), (0, n_dx), (0, 0), (0, 0)])
        c = c.reshape(-1, n_dx * m, b, b)[:, : n_dx * (m - 1)]
        z = c.reshape(-1, n_dx, m - 1, b, b).sum(1).reshape(*lead, nb, m - 1, b, b)
    else:
        z0 = jnp.zeros((*lead, nb, n_dx + ky1 - 1, b, b), x_TxNxKxbxb.dtype)
        x_dx = jnp.moveaxis(x_TxNxKxbxb[..., :n_dx, :, :], ax + 1, 0)  # [n_dx, ..., nb, b, b]

        def add_offset(z, inputs):
            dx, x_blk = inputs
            y_shift = jax.lax.dynamic_slice_in_dim(y_padded, dx, nb, axis=ax)  # Y[I + dx, :]
            contrib = jnp.einsum(
                "mab,mdbc->mdac", x_blk.reshape(-1, b, b), y_shift.reshape(-1, ky1, b, b)
            ).reshape(y_shift.shape)
            cur = jax.lax.dynamic_slice_in_dim(z, dx, ky1, axis=ax + 1)
            return jax.lax.dynamic_update_slice_in_dim(z, cur + contrib, dx, axis=ax + 1), None

        z, _ = jax.lax.scan(add_offset, z0, (jnp.arange(n_dx), x_dx))
    z = z[..., : k_out + 1, :, :]
    if z.shape[-3] < k_out + 1:
        z = jnp.pad(z, [(0, 0)] * (ax + 1) + [(0, k_out + 1 - z.shape[-3]), (0, 0), (0, 0)])
    return z


def _band_vecmat(v_TxNxb: jax.Array, y_TxNxKxbxb: jax.Array) -> jax.Array:
    """Row vector (blocked over nb) times a block-banded matrix; returns a blocked row vector."""
    nb, k1 = y_TxNxKxbxb.shape[-4], y_TxNxKxbxb.shape[-3]
    contrib = jnp.einsum("...ia,...idab->...dib", v_TxNxb, y_TxNxKxbxb)  # lands in block I + d
    # Skew trick: shift row d right by d blocks with one pad + reshape instead of k1 updates.
    m = nb + k1
    padded = jnp.pad(contrib, [(0, 0)] * (contrib.ndim - 2) + [(0, k1), (0, 0)])
    flat = padded.reshape(*padded.shape[:-3], k1 * m, padded.shape[-1])[..., : k1 * (m - 1), :]
    return flat.reshape(*padded.shape[:-3], k1, m - 1, padded.shape[-1]).sum(-3)[..., :nb, :]


def _leaf_chart(
    grammar: Grammar, tokens_BxL: jax.Array, length_B: jax.Array, wild_B: jax.Array, block: int
) -> jax.Array:
    """Terminal chart [B, S_D, nb, 2, b, b]: t derives span (i, i+1) iff token i == t + 1."""
    B, L = tokens_BxL.shape
    nb = -(-(L + 1) // block)
    pos_P = jnp.arange(nb * block)
    tok_BxP = jnp.pad(tokens_BxL, ((0, 0), (0, nb * block - L)))
    in_str_BxP = pos_P[None] < jnp.minimum(length_B, L)[:, None]
    term_S = jnp.arange(1, grammar.num_sym + 1)
    wild_BxP = pos_P[None] < wild_B[:, None]
    match_BxSxP = (tok_BxP[:, None, :] == term_S[None, :, None]) | wild_BxP[:, None]
    match_BxSxP = match_BxSxP & in_str_BxP[:, None, :]
    m = match_BxSxP.astype(jnp.float32).reshape(B, grammar.num_sym, nb, block)
    a = np.arange(block)
    same_block = (a[None, :] == a[:, None] + 1).astype(np.float32)  # (a, a + 1) inside a block
    next_block = np.zeros((block, block), np.float32)
    next_block[block - 1, 0] = 1.0  # (b - 1, 0) of the next block
    leaf = jnp.stack(
        [m[..., :, None] * same_block, m[..., :, None] * next_block], axis=-3
    )  # [B, S, nb, 2, b, b]
    return leaf if nb > 1 else leaf[..., :1, :, :]


def _reblock(chart: jax.Array, L: int, width: int, b_out: int) -> jax.Array:
    """Re-stores a band chart [B, S, nb, K+1, b, b] with block size b_out (one static gather).

    Why: a block must be about as wide as the band, so narrow low levels use small blocks (a
    3-token band in 32-blocks is ~90% zeros) and each level switches up to its own size.
    """
    nb_in, k_in1, b_in = chart.shape[2], chart.shape[3], chart.shape[4]
    if b_in == b_out:
        return chart
    nb = -(-(L + 1) // b_out)
    k = min((width + b_out - 1) // b_out, nb - 1)
    I, D, a, c = np.meshgrid(np.arange(nb), np.arange(k + 1), np.arange(b_out), np.arange(b_out),
                             indexing="ij")
    i, j = I * b_out + a, (I + D) * b_out + c
    i_s, d_s = i // b_in, j // b_in - i // b_in
    ok = (j > i) & (j - i <= width) & (i_s < nb_in) & (d_s < k_in1)
    flat = ((i_s * k_in1 + d_s) * b_in + i % b_in) * b_in + j % b_in
    flat = np.where(ok, flat, nb_in * k_in1 * b_in * b_in)  # -> an appended zero
    src = chart.reshape(*chart.shape[:2], -1)
    src = jnp.concatenate([src, jnp.zeros((*chart.shape[:2], 1), chart.dtype)], axis=-1)
    return jnp.take(src, flat.reshape(-1), axis=-1).reshape(*chart.shape[:2], *flat.shape)


def level_blocks(grammar: Grammar, block: int) -> tuple[int, ...]:
    """Block size per level 0..D: a power of two near half the level's widest span, <= block."""
    out = []
    for w in level_max_widths(grammar):
        b = 4
        while b < block and 2 * b < w:
            b *= 2
        out.append(min(b, block))
    return tuple(out)


def _level_plan(grammar: Grammar, level: int) -> tuple[list, list, list, np.ndarray]:
    """Static product plan for one level: distinct (X, Y) pairs, ternary tails, term->NT map."""
    rules = grammar.rules[level]
    pairs = sorted({r[:2] for rs in rules for r in rs if len(r) >= 2})
    triples = sorted({r for rs in rules for r in rs if len(r) == 3})
    units = sorted({r[0] for rs in rules for r in rs if len(r) == 1})
    term_of = {**{p: i for i, p in enumerate(pairs)}}
    term_of.update({t: len(pairs) + i for i, t in enumerate(triples)})
    term_of.update({(u,): len(pairs) + len(triples) + i for i, u in enumerate(units)})
    owner_SxT = np.zeros((len(rules), len(term_of)), np.float32)
    for j, rs in enumerate(rules):
        for r in rs:
            owner_SxT[j, term_of[r]] = 1.0
    return pairs, triples, units, owner_SxT


def _level_chart(grammar: Grammar, level: int, chart: jax.Array, k_out: int) -> jax.Array:
    """Chart of `level` [B, S_l, nb, k_out + 1, b, b] from the chart of level + 1."""
    pairs, triples, units, owner_SxT = _level_plan(grammar, level)
    terms = []
    if pairs:
        px, py = (np.array(c) for c in zip(*pairs, strict=True))
        prod = jnp.minimum(_band_matmul(chart[:, px], chart[:, py], k_out), 1.0)
        terms.append(prod)
    if triples:
        pair_idx = np.array([pairs.index(t[:2]) for t in triples])
        tz = np.array([t[2] for t in triples])
        terms.append(jnp.minimum(_band_matmul(prod[:, pair_idx], chart[:, tz], k_out), 1.0))
    if units:
        unit = chart[:, np.array(units), :, : k_out + 1]
        unit = jnp.pad(unit, [(0, 0)] * 3 + [(0, k_out + 1 - unit.shape[3])] + [(0, 0)] * 2)
        terms.append(unit)
    terms_BxT = jnp.concatenate(terms, axis=1)
    return jnp.minimum(jnp.einsum("st,bt...->bs...", owner_SxT, terms_BxT), 1.0)


@functools.partial(jax.jit, static_argnames=("grammar", "block"))
def is_member(
    grammar: Grammar,
    tokens_BxL: jax.Array,
    length_B: jax.Array,
    wildcard_prefix_len_B: jax.Array | None = None,
    *,
    block: int = 32,
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
      block: largest band block size b (static; narrow low levels use smaller blocks). 32 suits
        CPUs; 64-128 use accelerator matmul units better.

    Returns:
      bool[B].
    """
    B, L = tokens_BxL.shape
    wild_B = jnp.zeros((B,), jnp.int32) if wildcard_prefix_len_B is None else wildcard_prefix_len_B
    widths = level_max_widths(grammar)
    blocks = level_blocks(grammar, block)
    chart = _leaf_chart(grammar, tokens_BxL.astype(jnp.int32), length_B, wild_B,
                        blocks[max(grammar.depth - 1, 0)])
    # Charts down to level 2 only: the root and level 1 are swept left to right as row vectors
    # (the set of reachable end positions), since a full level-1 chart would cost ~P^2 * W_2 while
    # row-vector chains cost ~P * W_2 each.
    chart_level = min(2, grammar.depth)
    for level in range(grammar.depth - 1, chart_level - 1, -1):
        b_l = blocks[level]
        chart = _reblock(chart, L, widths[level + 1], b_l)
        k_out = min((widths[level] + b_l - 1) // b_l, -(-(L + 1) // b_l) - 1)
        chart = _level_chart(grammar, level, chart, k_out)
    chart = _reblock(chart, L, widths[chart_level], block)
    nb = chart.shape[2]
    start_BxNxb = jnp.zeros((B, nb, block), chart.dtype).at[:, 0, 0].set(1.0)

    def advance(level: int, sym: int, v_BxNxb: jax.Array) -> jax.Array:
        if level == chart_level:
            return jnp.minimum(_band_vecmat(v_BxNxb, chart[:, sym]), 1.0)
        out = jnp.zeros_like(v_BxNxb)
        for rule in grammar.rules[level][sym]:
            w = v_BxNxb
            for child in rule:
                w = advance(level + 1, child, w)
            out = out + w
        return jnp.minimum(out, 1.0)

    total_BxP = advance(0, 0, start_BxNxb).reshape(B, nb * block)
    n_B = jnp.clip(length_B, 0, nb * block - 1)
    hit_B = jnp.take_along_axis(total_BxP, n_B[:, None], axis=1)[:, 0] > 0
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
    block: int | None = None,
) -> np.ndarray:
    """Host wrapper: membership of ragged Python token lists, bucketed to limit recompiles.

    Strings longer than `grammar.max_len` (the longest string the grammar can derive) or shorter
    than `grammar.min_len` are answered False without running the DP, so there is no upper length
    limit; in between the chart is exact. Strings are grouped by padded length (`BUCKETS`) and run
    in sub-batches of one static size per bucket (a power of two that keeps a level's products near
    `max_batch_elems` floats; 1 when the call has a single string), so new lengths rarely
    recompile; short groups are padded with empty rows rather than compiled anew.

    Args:
      grammar: the grammar.
      strings: token lists (terminal ids, no BOS/EOS); any ints are accepted.
      wildcard_prefix_lens: optional per-string prefix-repair lengths (see `is_member`).
      max_batch_elems: memory budget per batch, in float32 elements of one level's pair products
        (default 2^20 on CPU, 2^28 on accelerators).
      block: band block size; default 32 on CPU, 64 elsewhere.

    Returns:
      bool[len(strings)].
    """
    on_cpu = jax.default_backend() == "cpu"
    block = block or (32 if on_cpu else 64)
    # CPU: sub-batches that stay in cache run ~2x faster per string than big ones.
    max_batch_elems = max_batch_elems or (2**20 if on_cpu else 2**28)
    out = np.zeros(len(strings), bool)
    wild = np.zeros(len(strings), np.int64)
    if wildcard_prefix_lens is not None:
        wild[:] = wildcard_prefix_lens
    by_bucket: dict[int, list[int]] = {}
    for i, s in enumerate(strings):
        if grammar.min_len <= len(s) <= grammar.max_len:
            by_bucket.setdefault(bucket_length(len(s)), []).append(i)
    widths = level_max_widths(grammar)
    for size, idx in sorted(by_bucket.items()):
        band = min(size + 1, widths[min(2, grammar.depth)] + 2 * block)
        per_string = 9 * (size + 1 + block) * band  # ~ S^2 pair products of the widest chart
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
                            jnp.asarray(wild_b), block=block)
            out[chunk] = np.asarray(res)[: len(chunk)]
    return out
