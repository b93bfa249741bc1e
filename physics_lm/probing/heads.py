"""Probe heads as pure functions over stacked features: linear and multi-linear (SPEC §7).

Shape legend (suffixes): N probed layers · B batch · T positions (query i) · S positions (key k)
· D feature width · G target groups (e.g. level × {ancestor, boundary}) · C classes (padded to
the largest group) · H pooling heads · R rank per head · O relative offsets (max_offset + 1).

Every probe is *independent*: one per (layer, group), all stacked into one set of arrays so a
single jitted step fits them all. Parameters of different (layer, group) pairs never mix, and
the loss is a sum of per-probe losses, so joint fitting equals fitting each probe on its own.
Groups with fewer than C classes get their extra logits masked to -inf (`class_mask_GxC`).

Multi-linear probe (the paper's "multi-head linear probe"): per head h,
  pooled_h[i] = sum_{k <= i} w_h(i - k) · U_h x_k,  w_h(.) = softmax_k of a learned table a_h[o]
over the clipped relative offset o = min(i - k, max_offset). The weights depend on positions
only (never on x), so the output stays linear in the hidden states, and k <= i keeps it causal.
The H pooled rank-R vectors are concatenated and fed to a linear classifier.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

_NEG_INF = -1e9
# Pooling logits are stored divided by this: Adam moves every parameter by about lr per step,
# and sharpening a head onto one offset needs logit gaps of several units, which plain lr=1e-3
# would take thousands of steps to reach; U and the classifier keep the plain rate.
POS_SCALE = 10.0
Params = dict[str, jax.Array]


def class_mask(num_classes: tuple[int, ...]) -> np.ndarray:
    """bool[G, C]: True where class c exists for group g (C = max classes)."""
    C = max(num_classes)
    return np.arange(C)[None, :] < np.asarray(num_classes)[:, None]


def _mask_logits(logits_NxBxTxGxC: jax.Array, class_mask_GxC: jax.Array) -> jax.Array:
    return jnp.where(class_mask_GxC, logits_NxBxTxGxC, _NEG_INF)


# -- linear --------------------------------------------------------------------------------------
def init_linear(key: jax.Array, N: int, D: int, G: int, C: int) -> Params:
    """Zero-initialised linear heads: each starts at the uniform prediction (no lucky init)."""
    del key  # zeros: a linear probe has a convex loss, so no symmetry needs breaking
    return {"w_NxDxGxC": jnp.zeros((N, D, G, C), jnp.float32),
            "b_NxGxC": jnp.zeros((N, G, C), jnp.float32)}


def apply_linear(params: Params, feats_NxBxTxD: jax.Array, class_mask_GxC: jax.Array
                 ) -> jax.Array:
    """Logits float32[N, B, T, G, C] of one linear probe per (layer, group)."""
    logits = jnp.einsum("nbtd,ndgc->nbtgc", feats_NxBxTxD, params["w_NxDxGxC"])
    return _mask_logits(logits + params["b_NxGxC"][:, None, None], class_mask_GxC)


# -- multi-linear --------------------------------------------------------------------------------
def alibi_slopes(H: int) -> np.ndarray:
    """Geometric slopes 1, 2^-8/H, ... : heads start looking over different ranges."""
    return 2.0 ** (-8.0 * np.arange(H) / H)


def init_multi(key: jax.Array, N: int, D: int, G: int, C: int, *, num_heads: int, rank: int,
               max_offset: int) -> Params:
    """Multi-linear heads; position logits start as ALiBi-style decays -slope_h · offset.

    A zero (uniform) start would average a whole long prefix and drown the current token; a
    spread of decays gives each head a different receptive field to refine from.
    """
    H, R, O = num_heads, rank, max_offset + 1
    k_u, k_w = jax.random.split(key)
    pos_HxO = -alibi_slopes(H)[:, None] * np.arange(O)[None, :]
    return {
        "u_NxGxDxHxR": jax.random.normal(k_u, (N, G, D, H, R), jnp.float32) / np.sqrt(D),
        "pos_NxGxHxO": jnp.broadcast_to(jnp.asarray(pos_HxO / POS_SCALE, jnp.float32),
                                        (N, G, H, O)),
        "w_NxGxHxRxC": jax.random.normal(k_w, (N, G, H, R, C), jnp.float32) * 0.01,
        "b_NxGxC": jnp.zeros((N, G, C), jnp.float32),
    }


def pooling_weights(pos_GxHxO: jax.Array, T: int) -> jax.Array:
    """float32[G, H, T, S]: causal softmax over k <= i of the clipped-offset logits.

    `pos_GxHxO` is the stored parameter (logits / POS_SCALE).
    """
    off_TxS = np.arange(T)[:, None] - np.arange(T)[None, :]
    causal_TxS = off_TxS >= 0
    clipped_TxS = np.clip(off_TxS, 0, pos_GxHxO.shape[-1] - 1)
    logits_GxHxTxS = jnp.where(causal_TxS, POS_SCALE * pos_GxHxO[..., clipped_TxS], _NEG_INF)
    return jax.nn.softmax(logits_GxHxTxS, axis=-1)


def _multi_one_layer(params: Params, feats_BxTxD: jax.Array) -> jax.Array:
    """Logits float32[B, T, G, C] of the G multi-linear probes on one layer.

    `params` holds one layer's slices: the leading N of every name is mapped away.
    """
    y_BxSxGxHxR = jnp.einsum("bsd,gdhr->bsghr", feats_BxTxD, params["u_NxGxDxHxR"])
    w_GxHxTxS = pooling_weights(params["pos_NxGxHxO"], feats_BxTxD.shape[1])
    pooled_BxTxGxHxR = jnp.einsum("ghts,bsghr->btghr", w_GxHxTxS, y_BxSxGxHxR)
    logits = jnp.einsum("btghr,ghrc->btgc", pooled_BxTxGxHxR, params["w_NxGxHxRxC"])
    return logits + params["b_NxGxC"]


def apply_multi(params: Params, feats_NxBxTxD: jax.Array, class_mask_GxC: jax.Array, *,
                remat: bool = True) -> jax.Array:
    """Logits float32[N, B, T, G, C] of one multi-linear probe per (layer, group).

    With `remat` the layers run one after another (`lax.map`) and each layer's [G, H, T, S]
    weights and pooled vectors are recomputed in the backward pass instead of kept for all N
    layers at once: at GPT-2 small sizes that is the difference between ~1 and ~10 GB. Without
    it the layers are vmapped: more memory, but quicker to compile (tiny models, tests).
    """
    if remat:
        one = jax.checkpoint(_multi_one_layer)
        logits_NxBxTxGxC = jax.lax.map(lambda a: one(*a), (params, feats_NxBxTxD))
    else:
        logits_NxBxTxGxC = jax.vmap(_multi_one_layer)(params, feats_NxBxTxD)
    return _mask_logits(logits_NxBxTxGxC, class_mask_GxC)


# -- registry ------------------------------------------------------------------------------------
KINDS = ("linear", "multi")


def init_heads(key: jax.Array, kinds: tuple[str, ...], N: int, D: int,
               num_classes: tuple[int, ...], *, num_heads: int = 16, rank: int = 32,
               max_offset: int = 128) -> dict[str, Params]:
    """{kind: params} for every requested kind, all sized for N layers and len(num_classes)."""
    G, C = len(num_classes), max(num_classes)
    out: dict[str, Any] = {}
    for i, kind in enumerate(kinds):
        k = jax.random.fold_in(key, i)
        if kind == "linear":
            out[kind] = init_linear(k, N, D, G, C)
        elif kind == "multi":
            out[kind] = init_multi(k, N, D, G, C, num_heads=num_heads, rank=rank,
                                   max_offset=max_offset)
        else:
            raise ValueError(f"probe kind {kind!r} is unknown; known: {KINDS}")
    return out


def apply_heads(params: dict[str, Params], feats_NxBxTxD: jax.Array,
                class_mask_GxC: jax.Array, *, remat: bool = True) -> dict[str, jax.Array]:
    """{kind: logits float32[N, B, T, G, C]} for every kind in `params`."""
    out = {}
    for kind, p in params.items():
        if kind == "linear":
            out[kind] = apply_linear(p, feats_NxBxTxD, class_mask_GxC)
        elif kind == "multi":
            out[kind] = apply_multi(p, feats_NxBxTxD, class_mask_GxC, remat=remat)
        else:
            raise ValueError(f"probe kind {kind!r} is unknown; known: {KINDS}")
    return out
