"""Does attention follow the DP? Statistics of a model's attention patterns on labelled CFG rows.

Part 1 (its section "How do transformers learn NTs?": position-based attention, then
boundary-based attention; named by title, as section and figure numbers move between arXiv
versions) argues that once the position bias is removed, attention from an NT end goes to the
*most adjacent* earlier NT ends, which is where a DP over the parse tree reads its sub-results.
Everything here is a sum over one batch of patterns A[b, h, i, j] (query i, key j <= i) and the
sampler's labels, so batches and devices just add up; `finalize` divides.

Labels (data/cfg/task.py): a position is a *token* when it holds a terminal of some string
(BOS, EOS and pad are not); it is a level-l *NT end* when nt_boundary[l] = 1 (ends nest: an end
at level l is one at every deeper level too). The r-th most adjacent earlier end of query i at
level l' is E_r(i, l'): E_0 = the last level-l' end j < i, E_{r+1}(i) = E_0(E_r(i)), each
required to lie in i's own string. E_0(i, l') is also the position right before i's own level-l'
span starts: the end of the span preceding it (a preceding sibling, or a cousin when i's span
opens its parent).

Quantities (per layer, per head h):
- position bias B_h(d) = mean over tokens i >= d of A[h, i, i - d] (keys of any kind): the part
  a position-only model explains. Reported for d < max_distance (`position_bias`).
- residual of a (query, key) pair: A[h, i, j] - B_h(i - j).
- boundary to boundary (the paper's NT-end to NT-end attention, indexed there too by the two
  levels and the rank r of adjacency): for the query set "ends at level l" and key level l',
  the mean residual at j = E_r(i, l') over the queries that have one: `adjacent` (r = 0) and
  `rank<r>`. Against it, `other`: the mean residual over every other (query, key) pair of the
  same queries whose key is a token of the same string (j <= i, j != E_0). Reported per
  (layer, l, l') as the mean over heads and the max over heads (the paper shows per-layer
  l x l' heatmaps).
- any token to NT end (the paper's attention from anywhere to NT ends, r = 0): the query set
  "any token", every key level (`any_to_end`).
- DP-state updates, two columns of the above: from every token to E_0 at the level of its parent
  (D - 1, the NT right above the terminals) and grandparent (D - 2): the end of the span that
  precedes its parent's / grandparent's span, where the DP state that token extends was
  completed. Residual against the same-distance mean B_h, and against `other` as above.
The position bias subtracted is the same model's on the same rows, so a pattern that depends
only on i - j has residual exactly 0. Softmax over a growing prefix makes a content-blind model
depend on i as well as on i - j, so residuals are not 0 at init: the random-init control, on
the same rows, shows what label structure alone produces.

Shape legend: N layers, B batch, H heads, T query positions, S key positions (= T), D grammar
levels, Q query sets (one per level, then "any token"), K key levels, R ranks.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np


class Views(NamedTuple):
    """What the statistics need from a batch's labels.

    Attributes:
      tok: bool[B, T], a terminal of some string.
      sid: int32[B, T], string id within the row.
      off: int32[B, T], i - the first token of its string (0 off tokens).
      target: int32[K, R, B, T], E_r(i, levels[k]); -1 if none.
      query: bool[Q, B, T], ends at levels[q] (q < K), then every token.
    """

    tok: jax.Array
    sid: jax.Array
    off: jax.Array
    target: jax.Array
    query: jax.Array


def _take(x_BxT: jax.Array, idx_BxT: jax.Array) -> jax.Array:
    return jnp.take_along_axis(x_BxT, jnp.clip(idx_BxT, 0, x_BxT.shape[1] - 1), axis=1)


def previous_ends(end_BxT: jax.Array, sid_BxT: jax.Array) -> jax.Array:
    """int32[B, T]: the last j < i with end_BxT[b, j] in i's string, else -1."""
    B, T = end_BxT.shape
    t_T = jnp.arange(T, dtype=jnp.int32)
    upto_BxT = jax.lax.cummax(jnp.where(end_BxT, t_T, -1), axis=1)
    prev_BxT = jnp.concatenate([jnp.full((B, 1), -1, jnp.int32), upto_BxT[:, :-1]], axis=1)
    same_BxT = _take(sid_BxT, prev_BxT) == sid_BxT
    return jnp.where((prev_BxT >= 0) & same_BxT, prev_BxT, -1)


def label_views(bnd_BxTxD: jax.Array, sid_BxT: jax.Array, levels: Sequence[int],
                ranks: int) -> Views:
    """Targets and query sets of a batch (module docstring) from its nt_boundary / string_id."""
    T = bnd_BxTxD.shape[1]
    tok_BxT = bnd_BxTxD[..., 0] >= 0
    t_T = jnp.arange(T, dtype=jnp.int32)
    opens_BxT = tok_BxT & ~jnp.concatenate([jnp.zeros_like(tok_BxT[:, :1]), tok_BxT[:, :-1]], 1)
    off_BxT = t_T - jax.lax.cummax(jnp.where(opens_BxT, t_T, 0), axis=1)
    targets = []
    for level in levels:
        prev_BxT = previous_ends(bnd_BxTxD[..., level] == 1, sid_BxT)
        by_rank = [prev_BxT]
        for _ in range(ranks - 1):
            by_rank.append(jnp.where(by_rank[-1] >= 0, _take(prev_BxT, by_rank[-1]), -1))
        targets.append(jnp.stack(by_rank))
    queries = [tok_BxT & (bnd_BxTxD[..., level] == 1) for level in levels] + [tok_BxT]
    return Views(tok_BxT, sid_BxT, jnp.where(tok_BxT, off_BxT, 0), jnp.stack(targets),
                 jnp.stack(queries))


def _masks(v: Views) -> jax.Array:
    """bool[Q, K, R, B, T]: query i of set q has an r-th target at key level k."""
    return v.query[:, None, None] & (v.target >= 0)[None] & v.tok


def pattern_sums(pattern_BxHxTxS: jax.Array, v: Views) -> dict[str, jax.Array]:
    """One layer's sums: bias_HxT, target_QxKxRxH (weights at E_r), same_QxKxH (weights on
    every same-string token key j <= i, for the `other` mean)."""
    A = pattern_BxHxTxS.astype(jnp.float32)
    T = A.shape[2]
    t_T = jnp.arange(T)
    dist_TxT = t_T[:, None] - t_T[None, :]  # [i, d] -> key i - d
    diag_BxHxTxT = jnp.take_along_axis(A, jnp.clip(dist_TxT, 0)[None, None], axis=3)
    ok_BxTxT = (dist_TxT >= 0)[None] & v.tok[:, :, None]
    bias_HxT = jnp.einsum("bhid,bid->hd", diag_BxHxTxT, ok_BxTxT.astype(jnp.float32))
    K, R = v.target.shape[:2]
    gather = lambda tgt_BxT: jnp.take_along_axis(
        A, jnp.clip(tgt_BxT, 0)[:, None, :, None], axis=3)[..., 0]
    w_KxRxBxHxT = jnp.stack([jnp.stack([gather(v.target[k, r]) for r in range(R)])
                             for k in range(K)])
    m_QxKxRxBxT = _masks(v).astype(jnp.float32)
    target = jnp.einsum("qkrbi,krbhi->qkrh", m_QxKxRxBxT, w_KxRxBxHxT)
    same_BxTxS = ((dist_TxT >= 0)[None] & v.tok[:, None, :]
                  & (v.sid[:, :, None] == v.sid[:, None, :]))
    row_BxHxT = jnp.einsum("bhis,bis->bhi", A, same_BxTxS.astype(jnp.float32))
    same = jnp.einsum("qkbi,bhi->qkh", m_QxKxRxBxT[:, :, 0], row_BxHxT)
    return {"bias": bias_HxT, "target": target, "same": same}


def _histogram(weight: jax.Array, value: jax.Array, T: int) -> jax.Array:
    """out[..., t] = sum of weight over the last two axes where value == t (a scatter-add:
    a one-hot of [.., B, T, T] would be the largest array of the step)."""
    lead = weight.shape[:-2]
    cell = jnp.arange(int(np.prod(lead)), dtype=jnp.int32).reshape(*lead, 1, 1) * T
    flat = jnp.zeros(int(np.prod(lead)) * T, jnp.float32)
    return flat.at[(cell + value).ravel()].add(weight.ravel()).reshape(*lead, T)


def label_counts(v: Views) -> dict[str, jax.Array]:
    """Model-free counts: bias_n_T (tokens i >= d), target_n_QxKxR, target_hist_QxKxRxT
    (distances i - E_r), off_hist_QxKxT (offsets i - first token, queries with an E_0)."""
    T = v.target.shape[-1]
    m = _masks(v).astype(jnp.float32)
    t_T = jnp.arange(T)
    bias_n = jnp.sum(v.tok[:, :, None] & (t_T[:, None] >= t_T[None, :])[None], axis=(0, 1))
    dist_KxRxBxT = jnp.clip(t_T - v.target, 0, T - 1)
    hist = _histogram(m, jnp.broadcast_to(dist_KxRxBxT, m.shape), T)
    off = _histogram(m[:, :, 0], jnp.broadcast_to(v.off, m[:, :, 0].shape), T)
    return {"bias_n": bias_n.astype(jnp.float32), "target_n": m.sum((3, 4)),
            "target_hist": hist, "off_hist": off}


def batch_sums(patterns_N: Sequence[jax.Array], bnd_BxTxD: jax.Array, sid_BxT: jax.Array,
               levels: Sequence[int], ranks: int) -> dict[str, jax.Array]:
    """Every sum of one batch: per-layer sums stacked on a leading N axis, plus label counts."""
    v = label_views(bnd_BxTxD, sid_BxT, levels, ranks)
    per_layer = [pattern_sums(p, v) for p in patterns_N]
    return {**{k: jnp.stack([s[k] for s in per_layer]) for k in per_layer[0]},
            **label_counts(v)}


def _div(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(b > 0, a / np.where(b > 0, b, 1), np.nan)


def finalize(sums: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Means from summed `batch_sums` (float64 numpy); NaN where a set is empty.

    Returns: position_bias_NxHxT; for key "target": attn / bias / residual [N, Q, K, R, H]
    and n_QxKxR; for "other": attn / bias / residual [N, Q, K, H] and n_QxK (pairs).
    """
    bias = _div(sums["bias"], sums["bias_n"][None, None])
    bias0 = np.nan_to_num(bias)  # NaN only at distances no query reaches (histograms are 0)
    n_t = sums["target_n"]
    attn_t = _div(sums["target"], n_t[None, ..., None])
    exp_t = _div(np.einsum("qkrd,nhd->nqkrh", sums["target_hist"], bias0), n_t[None, ..., None])
    reach = np.cumsum(sums["off_hist"][..., ::-1], axis=-1)[..., ::-1]  # queries with off >= d
    other_hist = reach - sums["target_hist"][:, :, 0]
    n_o = other_hist.sum(-1)
    attn_o = _div(sums["same"] - sums["target"][:, :, :, 0], n_o[None, ..., None])
    exp_o = _div(np.einsum("qkd,nhd->nqkh", other_hist, bias0), n_o[None, ..., None])
    return {"position_bias": bias,
            "target": {"attn": attn_t, "bias": exp_t, "residual": attn_t - exp_t, "n": n_t},
            "other": {"attn": attn_o, "bias": exp_o, "residual": attn_o - exp_o, "n": n_o}}
