"""Jitted, fixed-shape CFG sampler with NT-ancestor and NT-boundary labels (SPEC §2.5).

The grammars are layered (a rule on level l only produces level-l+1 symbols), so a derivation can
be expanded one whole level at a time: every node of level l draws its rule uniformly, the children
are laid out by an exclusive cumsum of the rule lengths, and each child remembers its parent. That
is exactly the official distribution (one independent uniform rule choice per NT); only the RNG
differs, so strings match the official ones in distribution, not seed for seed (see reference.py
for the seed-exact host sampler).

Buffers on level l have the exact per-level maximum `grammar.max_nodes[l]` (M_l), so nothing can
overflow and no string is ever rejected or resampled: the distribution is not truncated.

Shape legend: B batch, M_l nodes on level l, L = M_D = grammar.max_len (token buffer), D depth.
Labels use *local* class indices (`id - idx[l][0]`); `reference.global_ancestors` converts to the
official global ids.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from physics_lm.data.cfg.grammar import MAX_RULE_LEN, MAX_RULES, Grammar


class Derivation(NamedTuple):
    """A batch of derivation trees, stored level by level.

    Attributes:
      sym: D + 1 arrays int32[B, M_l]: local symbol of node k on level l (-1 past count).
      parent: D + 1 arrays int32[B, M_l]: index of the level-(l-1) parent of node k (level 0:
        0; -1 past count).
      rule: D arrays int32[B, M_l]: rule index chosen by node k of level l < D (-1 if invalid).
      count: int32[B, D + 1]: number of valid nodes per level; count[:, D] is the length.
    """

    sym: tuple[jax.Array, ...]
    parent: tuple[jax.Array, ...]
    rule: tuple[jax.Array, ...]
    count: jax.Array


class CFGStrings(NamedTuple):
    """Sampled strings and their per-token labels (B leading; L = grammar.max_len).

    Attributes:
      tokens: int32[B, L] terminal ids 1..num_sym, 0 (pad) past `length`.
      length: int32[B] number of tokens.
      nt_ancestor: int32[B, L, D] local class of token i's ancestor on level l = 0..D-1 (-1 past
        length).
      nt_boundary: int32[B, L, D] 1 iff token i is the last token of its level-l ancestor's span
        (the last token of the string included), else 0; -1 past length.
    """

    tokens: jax.Array
    length: jax.Array
    nt_ancestor: jax.Array
    nt_boundary: jax.Array


def rule_tables(grammar: Grammar, n_symbols: tuple[int, ...] | None = None) -> tuple:
    """Per level l < D: flat (child int32[S*R*3], length int32[S*R], n_rules int32[S]).

    Args:
      grammar: the grammar.
      n_symbols: optional S per level >= grammar.sizes[:D]; padding symbols are never reached.
        Padding lets grammars of one depth share one compiled `derive_from_tables`.
    """
    out = []
    for lv, (child, length, n_rules) in enumerate(grammar.tables):
        pad = (n_symbols[lv] if n_symbols else len(n_rules)) - len(n_rules)
        if pad < 0:
            raise ValueError(f"n_symbols[{lv}]={n_symbols[lv]} < {len(n_rules)} symbols")
        child = np.pad(child, ((0, pad), (0, 0), (0, 0)), constant_values=-1)
        length = np.pad(length, ((0, pad), (0, 0)))
        n_rules = np.pad(n_rules, (0, pad), constant_values=1)
        out.append((child.reshape(-1), length.reshape(-1), n_rules))
    return tuple(out)


def take_rows(x_BxM: jax.Array, idx_BxN: jax.Array) -> jax.Array:
    """out[b, n] = x[b, idx[b, n]] (idx in range) as one flat 1-D gather.

    Why not vmap/take_along_axis: XLA:CPU compiles and runs batched gathers 5-10x slower than a
    1-D gather with precomputed flat indices, and this sampler is mostly gathers.
    """
    B, M = x_BxM.shape
    return x_BxM.reshape(-1)[idx_BxN + (jnp.arange(B, dtype=idx_BxN.dtype) * M)[:, None]]


def _cumsum(x_BxN: jax.Array, block: int = 32) -> jax.Array:
    """Inclusive cumsum of small non-negative ints along axis 1, as two blocked matmuls.

    Why: XLA:CPU lowers cumsum to a reduce-window that is ~4x slower here than multiplying
    blocks of 32 by a triangular 0/1 matrix (then adding the block totals' exclusive cumsum).
    Float32 sums of integers below 2^24 are exact; HIGHEST precision keeps TPU/GPU dots from
    rounding the inputs to bf16/tf32.
    """
    B, n = x_BxN.shape
    nb = -(-n // block)
    x_BxKxC = jnp.pad(x_BxN, ((0, 0), (0, nb * block - n))).astype(jnp.float32)
    x_BxKxC = x_BxKxC.reshape(B, nb, block)
    hi = jax.lax.Precision.HIGHEST
    upper_CxC = jnp.triu(jnp.ones((block, block), jnp.float32))
    inner_BxKxC = jnp.matmul(x_BxKxC, upper_CxC, precision=hi)
    strict_KxK = jnp.triu(jnp.ones((nb, nb), jnp.float32), 1)
    before_BxK = jnp.matmul(inner_BxKxC[:, :, -1], strict_KxK, precision=hi)
    out_BxKxC = inner_BxKxC + before_BxK[:, :, None]
    return out_BxKxC.reshape(B, -1)[:, :n].astype(x_BxN.dtype)


def _expand_level(
    u_BxM: jax.Array, sym_BxM: jax.Array, count_B: jax.Array, tables, m_next: int
) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    """Expands every valid node of one level; returns (rule_BxM, sym_BxN, parent_BxN, count_B).

    Why a marker cumsum instead of scattering children: each valid node owns a contiguous run of
    >= 1 child slots starting at its exclusive-cumsum offset, so marking the run starts and
    cumsumming gives every slot its parent with one small scatter; the children themselves are
    then plain gathers.
    """
    child_flat, len_flat, n_rules = tables
    B, m = sym_BxM.shape
    valid_BxM = jnp.arange(m)[None, :] < count_B[:, None]
    s_BxM = jnp.where(valid_BxM, sym_BxM, 0)
    n_BxM = n_rules[s_BxM]
    # floor(u * n) with u in [0, 1) on a 2^-23 grid: uniform up to a 1e-7 relative bias.
    rule_BxM = jnp.minimum((u_BxM * n_BxM).astype(jnp.int32), n_BxM - 1)
    sr_BxM = s_BxM * MAX_RULES + rule_BxM
    len_BxM = jnp.where(valid_BxM, len_flat[sr_BxM], 0)
    end_BxM = _cumsum(len_BxM)
    start_BxM = end_BxM - len_BxM
    count_next_B = end_BxM[:, -1]
    # Invalid nodes have length 0 and start at count_next <= m_next: a row's spare last column.
    row_B = jnp.arange(B, dtype=jnp.int32) * (m_next + 1)
    marks = jnp.zeros((B * (m_next + 1),), jnp.int32).at[start_BxM + row_B[:, None]].add(1)
    marks_BxN = marks.reshape(B, m_next + 1)[:, :m_next]
    slot_N = jnp.arange(m_next, dtype=jnp.int32)
    valid_BxN = slot_N[None, :] < count_next_B[:, None]
    parent_BxN = jnp.clip(_cumsum(marks_BxN) - 1, 0, m - 1)
    offset_BxN = slot_N[None, :] - take_rows(start_BxM, parent_BxN)
    flat_BxN = take_rows(sr_BxM, parent_BxN) * MAX_RULE_LEN + offset_BxN
    child_BxN = child_flat[jnp.clip(flat_BxN, 0, child_flat.size - 1)]
    sym_BxN = jnp.where(valid_BxN, child_BxN, -1)
    parent_BxN = jnp.where(valid_BxN, parent_BxN, -1)
    return jnp.where(valid_BxM, rule_BxM, -1), sym_BxN, parent_BxN, count_next_B


def derive(keys_B: jax.Array, grammar: Grammar) -> Derivation:
    """Samples one derivation tree per key. Pure function of the keys (string b of keys_B[b]).

    Args:
      keys_B: jax.random keys, shape [B].
      grammar: the grammar (static; its tables become constants).

    Returns:
      The batched Derivation, with buffers of the exact per-level maximum sizes.
    """
    return derive_from_tables(keys_B, rule_tables(grammar), grammar.max_nodes)


@functools.partial(jax.jit, static_argnames=("sizes",))
def derive_from_tables(keys_B: jax.Array, tables: tuple, sizes: tuple[int, ...]) -> Derivation:
    """`derive` with the rule tables as data: one compile serves every grammar of these shapes.

    Args:
      keys_B: jax.random keys, shape [B].
      tables: `rule_tables(grammar, n_symbols)`.
      sizes: node buffer size per level 0..D (static), each >= grammar.max_nodes; larger
        buffers only add padding (the trees of one key still depend on the sizes, via the
        random-number layout).
    """
    D = len(tables)
    B = keys_B.shape[0]
    # One RNG call for all levels, materialised once: without the barrier XLA fuses (and so
    # recomputes and recompiles) the threefry hash into every level's consumer.
    n_u = sum(sizes[:D])
    u_all = jax.lax.optimization_barrier(
        jax.vmap(lambda k: jax.random.uniform(k, (n_u,)))(keys_B))
    offsets = np.cumsum((0, *sizes[:D]))
    sym = [jnp.zeros((B, 1), jnp.int32)]
    parent = [jnp.zeros((B, 1), jnp.int32)]
    rules, counts = [], [jnp.ones((B,), jnp.int32)]
    for lv in range(D):
        rule_BxM, sym_BxN, parent_BxN, count_B = _expand_level(
            u_all[:, offsets[lv] : offsets[lv + 1]], sym[lv], counts[lv], tables[lv],
            sizes[lv + 1])
        rules.append(rule_BxM)
        sym.append(sym_BxN)
        parent.append(parent_BxN)
        counts.append(count_B)
    return Derivation(tuple(sym), tuple(parent), tuple(rules), jnp.stack(counts, axis=1))


def derivation_labels(deriv: Derivation, depth: int) -> CFGStrings:
    """Tokens and per-token labels of a batched derivation.

    Why compose parent pointers: the node index of token i on level l is the parent chain
    followed D - l times, which separates adjacent siblings that carry the same symbol (the
    reason the boundary cannot be read off the ancestor symbols alone).
    """
    length_B = deriv.count[:, depth]
    L = deriv.sym[depth].shape[1]
    pos_L = jnp.arange(L, dtype=jnp.int32)
    valid_BxL = pos_L[None, :] < length_B[:, None]
    last_BxL = pos_L[None, :] == length_B[:, None] - 1
    node_BxL = jnp.where(valid_BxL, pos_L[None, :], 0)
    anc, bnd = [], []
    for lv in range(depth - 1, -1, -1):
        # The barrier keeps XLA from fusing (recomputing) the whole gather chain into each use.
        node_BxL = jax.lax.optimization_barrier(take_rows(deriv.parent[lv + 1], node_BxL))
        nxt_BxL = jnp.concatenate([node_BxL[:, 1:], node_BxL[:, -1:]], axis=1)
        anc.append(jnp.where(valid_BxL, take_rows(deriv.sym[lv], node_BxL), -1))
        is_end = (node_BxL != nxt_BxL) | last_BxL
        bnd.append(jnp.where(valid_BxL, is_end.astype(jnp.int32), -1))
    tokens_BxL = jnp.where(valid_BxL, deriv.sym[depth] + 1, 0)
    return CFGStrings(tokens_BxL, length_B, jnp.stack(anc[::-1], -1), jnp.stack(bnd[::-1], -1))


def sample_from_keys(keys_B: jax.Array, grammar: Grammar) -> CFGStrings:
    """One labelled string per key (string b is a pure function of keys_B[b]); jittable."""
    return derivation_labels(derive(keys_B, grammar), grammar.depth)


@functools.partial(jax.jit, static_argnames=("grammar", "batch_size"))
def sample_strings(key: jax.Array, grammar: Grammar, batch_size: int) -> CFGStrings:
    """Samples `batch_size` independent strings with labels, one key per string.

    Args:
      key: a jax.random key; string b uses `jax.random.split(key, batch_size)[b]`.
      grammar: the grammar (static).
      batch_size: B (static).

    Returns:
      CFGStrings with leading dim B and token buffers of length grammar.max_len.
    """
    return sample_from_keys(jax.random.split(key, batch_size), grammar)


@functools.partial(jax.jit, static_argnames=("grammar", "batch_size"))
def sample_derivations(key: jax.Array, grammar: Grammar, batch_size: int) -> Derivation:
    """The raw trees behind `sample_strings(key, grammar, batch_size)` (same keys, same trees)."""
    return derive(jax.random.split(key, batch_size), grammar)
