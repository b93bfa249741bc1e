"""GPT-2 in Flax Linen with the position schemes of Physics of LM Part 1.

Shape legend (suffixes of tensor names):
  B batch · T query length · S key length · D d_model · H heads · K head dim · F MLP width · V vocab

Position schemes (`ModelConfig.pos`):
  absolute       GPT-2: learned position embeddings added to the token embeddings (GPT).
  rotary         GPT_rot: rotary embeddings on queries and keys of every layer, no position
                 embedding.
  relative       GPT_rel: q·k logits plus a learned per-head bias b[h, min(i-j, R)] of the clipped
                 relative distance (R = rel_max_distance), no position embedding.
  position_only  GPT_pos: attention weights come only from the learned bias b[h, min(i-j, R)]:
                 softmax over j <= i of b, no query/key term (values are still projected).
  uniform        GPT_uni: head h (0-based) averages uniformly over the last 2^(h+1) - 1 tokens
                 (itself included), i.e. 1, 3, 7, ... tokens; no query/key, no learned positions.

The forward pass returns `(logits_BxTxV, acts)`; `acts` holds the activations named in `capture`
(stable names, see `activation_names`), so probes never patch the model. With `decode=True` the
attention keeps a KV cache in the mutable `cache` collection (`init_cache` sizes it), and tokens
are fed a chunk at a time; every position scheme works in both modes. A block builds its
[B, H, T, S] attention pattern as a value only when `capture` names it.

`model.remat` (= `remat_policy` "full"): for the backward pass each block keeps only its input
x_BxTxD (compute dtype; the positions and the parameters are live anyway) and recomputes
everything else once the backward pass reaches it (`models/remat.py`; `nn.remat` did not hold on
XLA:CPU); "save_dots" / "offload" also keep the matmul outputs (on the device / host). A block
whose pattern is captured runs without remat. With dropout, a remat'd block draws its masks from
the model's dropout stream rather than its own: as random as, but not equal to, those of
remat=False.

`model.attention` (xla | cudnn | splash) picks the causal attention kernel; `models/attention.py`
has the support matrix (position schemes, decode) and the loud fallback to XLA.
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp

from physics_lm.config import ModelConfig
from physics_lm.models import attention
from physics_lm.models.remat import checkpoint_policy, recompute_in_backward, recompute_with_policy

_NEG_INF = -1e9
_BLOCK = 128  # query block of the causal block-skipping attention (training/eval, T >= 256)


@flax.struct.dataclass
class SharedPrefix:
    """`segments` of a row laid out as a context of `prefix_len` tokens followed by queries of
    `segment_len` tokens each (the V-probe's packing, `probing/igsm_queries.pack`).

    Same mask as the `(segment_BxT, context_BxT)` tuple; knowing the layout, the attention forms
    only the blocks a token may see (the context causally; each query over the context and
    itself) instead of the whole [T, T] mask: at the V-probe's 320 + 18 x 33 tokens, 2.7x fewer
    logits."""

    segment: jax.Array  # [B, T]
    context: jax.Array  # [B, T]
    prefix_len: int = flax.struct.field(pytree_node=False)
    segment_len: int = flax.struct.field(pytree_node=False)


def activation_names(num_layers: int) -> tuple[str, ...]:
    """Every name `capture` accepts, in forward order."""
    names = ["embed"]
    for i in range(num_layers):
        names += [f"blocks.{i}.attn.pattern", f"blocks.{i}.resid_post"]
    return (*names, "final")


def _dtype(cfg: ModelConfig) -> jnp.dtype:
    return jnp.bfloat16 if cfg.compute_dtype == "bfloat16" else jnp.float32


def _init(std: float, axes: tuple[str | None, ...]) -> nn.initializers.Initializer:
    return nn.with_logical_partitioning(nn.initializers.normal(std), axes)


def _zeros(axes: tuple[str | None, ...]) -> nn.initializers.Initializer:
    return nn.with_logical_partitioning(nn.initializers.zeros, axes)


def rotate(x_BxTxHxK: jax.Array, pos_BxT: jax.Array, base: float) -> jax.Array:
    """Rotary embedding (half-split convention): rotates feature pairs (k, k + K/2)."""
    half = x_BxTxHxK.shape[-1] // 2
    freq_K2 = base ** (-jnp.arange(half, dtype=jnp.float32) / half)
    angle_BxTx1xK2 = (pos_BxT[..., None].astype(jnp.float32) * freq_K2)[:, :, None, :]
    sin, cos = jnp.sin(angle_BxTx1xK2), jnp.cos(angle_BxTx1xK2)
    x1, x2 = jnp.split(x_BxTxHxK.astype(jnp.float32), 2, axis=-1)
    out = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
    return out.astype(x_BxTxHxK.dtype)


def _logits(cfg: ModelConfig, spec: str, q, k, dist_BxR, allowed_BxR, bias_HxR) -> jax.Array:
    """Masked attention logits [B, H, *R] of the scheme: q·k/sqrt(K) (`spec` contracts q and k
    into that shape; none without q), plus the relative bias, within the uniform window.

    `dist_BxR` = query position - key position and `allowed_BxR` (causal, validity, segments)
    index the same [B, *R] query-key pairs."""
    H, K = cfg.num_heads, cfg.head_dim
    B, rest = dist_BxR.shape[0], dist_BxR.shape[1:]
    logits = jnp.zeros((B, H, *rest), jnp.float32)
    if q is not None:
        logits = jnp.einsum(spec, q, k, preferred_element_type=jnp.float32) / jnp.sqrt(K)
    if cfg.pos in ("relative", "position_only"):
        logits += jnp.moveaxis(bias_HxR[:, jnp.clip(dist_BxR, 0, cfg.rel_max_distance)], 0, 1)
    allowed = allowed_BxR[:, None]
    if cfg.pos == "uniform":
        window_H = 2 ** (jnp.arange(H) + 1) - 1
        allowed = allowed & (dist_BxR[:, None] < window_H.reshape(1, H, *(1,) * len(rest)))
    return jnp.where(jnp.broadcast_to(allowed, logits.shape), logits, _NEG_INF)


def _attend_shared_prefix(cfg: ModelConfig, q_BxTxHxK, k_BxTxHxK, v_BxTxHxK, pos_BxT,
                          segments: SharedPrefix, bias_HxR, dropout) -> jax.Array:
    """`_attend` with `segments` for a `SharedPrefix` row, by blocks (mixed values only).

    The context (C tokens) attends causally to itself; query j (L tokens) to the context
    positions below its `context` and causally to itself; the two key sets share one
    softmax. Exactly the tuple form's mask, without forming the [T, T] pairs."""
    B, T = pos_BxT.shape
    C, L = segments.prefix_len, segments.segment_len
    Q = (T - C) // L
    if C + Q * L != T or Q < 1:
        raise ValueError(f"SharedPrefix(prefix_len={C}, segment_len={L}) does not tile a row "
                         f"of {T} tokens")
    has_q = q_BxTxHxK is not None
    kp, vp, pos_p = k_BxTxHxK[:, :C], v_BxTxHxK[:, :C], pos_BxT[:, :C]
    out_p, _ = _attend(cfg, q_BxTxHxK[:, :C] if has_q else None, kp, vp, pos_p, pos_p,
                       jnp.ones((B, C), bool), bias_HxR, dropout)
    split = lambda x: x[:, C:].reshape(B, Q, L, *x.shape[2:])
    qs = split(q_BxTxHxK) if has_q else None
    ks, vs, pos_s, ctx_s = split(k_BxTxHxK), split(v_BxTxHxK), split(pos_BxT), split(
        segments.context)
    dist_pre = pos_s[..., None] - pos_p[:, None, None, :]  # [B, Q, L, C]
    allowed_pre = (dist_pre >= 0) & (pos_p[:, None, None, :] < ctx_s[..., None])
    dist_own = pos_s[..., :, None] - pos_s[..., None, :]  # [B, Q, L, L]
    logits = jnp.concatenate(
        [_logits(cfg, "bqlhk,bchk->bhqlc", qs, kp, dist_pre, allowed_pre, bias_HxR),
         _logits(cfg, "bqlhk,bqmhk->bhqlm", qs, ks, dist_own, dist_own >= 0, bias_HxR)],
        axis=-1)
    probs = dropout(jax.nn.softmax(logits, axis=-1)).astype(v_BxTxHxK.dtype)
    out_s = (jnp.einsum("bhqlc,bchk->bqlhk", probs[..., :C], vp)
             + jnp.einsum("bhqlm,bqmhk->bqlhk", probs[..., C:], vs))
    return jnp.concatenate([out_p, out_s.reshape(B, Q * L, *out_s.shape[3:])], axis=1)


def _attend(cfg: ModelConfig, q_BxTxHxK, k_BxSxHxK, v_BxSxHxK, pos_BxT, kpos_BxS, valid_BxS,
            bias_HxR, dropout, segments=None):
    """Mixed values of one query block over its keys (by position), and its attention weights.

    `segments` = (segment_BxT, context_BxT) of a packed row (queries = keys, see `GPT2`)."""
    dist_BxTxS = pos_BxT[:, :, None] - kpos_BxS[:, None, :]
    allowed_BxTxS = (dist_BxTxS >= 0) & valid_BxS[:, None, :]
    if segments is not None:
        seg_BxT, ctx_BxT = segments
        same_BxTxS = seg_BxT[:, :, None] == seg_BxT[:, None, :]
        shared_BxTxS = (seg_BxT[:, None, :] == 0) & (kpos_BxS[:, None, :] < ctx_BxT[:, :, None])
        allowed_BxTxS = allowed_BxTxS & (same_BxTxS | shared_BxTxS)
    logits_BxHxTxS = _logits(cfg, "bthk,bshk->bhts", q_BxTxHxK, k_BxSxHxK, dist_BxTxS,
                             allowed_BxTxS, bias_HxR)
    pattern_BxHxTxS = jax.nn.softmax(logits_BxHxTxS, axis=-1)
    probs = dropout(pattern_BxHxTxS)
    out_BxTxHxK = jnp.einsum("bhts,bshk->bthk", probs.astype(v_BxSxHxK.dtype), v_BxSxHxK)
    return out_BxTxHxK, pattern_BxHxTxS


class Attention(nn.Module):
    cfg: ModelConfig
    decode: bool = False

    def _bias_table(self) -> jax.Array:
        return self.param("rel_bias", _init(0.02, ("heads", None)),
                          (self.cfg.num_heads, self.cfg.rel_max_distance + 1))

    @nn.compact
    def __call__(self, x_BxTxD: jax.Array, pos_BxT: jax.Array, deterministic: bool,
                 blockwise: bool = False, return_pattern: bool = False, segments=None,
                 prefill: bool = False):
        """`(out_BxTxD, pattern_BxHxTxS or None)`: the pattern only when `return_pattern`.

        `blockwise`: positions are index order (no cache); `prefill`: see `GPT2.__call__`."""
        cfg, dt = self.cfg, _dtype(self.cfg)
        H, K, D = cfg.num_heads, cfg.head_dim, cfg.d_model
        uses_qk = cfg.pos in ("absolute", "rotary", "relative")
        # One fused projection (query, key, value or value alone): one large matmul, not three.
        n = 3 if uses_qk else 1
        w_DxNxHxK = self.param("qkv_kernel", _init(0.02, ("embed", None, "heads", "kv")),
                               (D, n, H, K))
        b_NxHxK = self.param("qkv_bias", _zeros((None, "heads", "kv")), (n, H, K))
        qkv_BxTxNxHxK = (jnp.einsum("btd,dnhk->btnhk", x_BxTxD, w_DxNxHxK.astype(dt))
                         + b_NxHxK.astype(dt))
        v_BxTxHxK = qkv_BxTxNxHxK[:, :, -1]
        if uses_qk:
            q_BxTxHxK, k_BxTxHxK = qkv_BxTxNxHxK[:, :, 0], qkv_BxTxNxHxK[:, :, 1]
            if cfg.pos == "rotary":
                q_BxTxHxK = rotate(q_BxTxHxK, pos_BxT, cfg.rope_base)
                k_BxTxHxK = rotate(k_BxTxHxK, pos_BxT, cfg.rope_base)
        else:
            k_BxTxHxK = jnp.zeros_like(v_BxTxHxK[..., :0])  # no keys: weights are positional

        B, T = x_BxTxD.shape[:2]
        if self.decode:  # append this chunk to the cache; attend over the whole cache
            k_BxSxHxK, v_BxSxHxK, kpos_BxS, valid_BxS = self._update_cache(
                k_BxTxHxK, v_BxTxHxK, pos_BxT)
        else:
            k_BxSxHxK, v_BxSxHxK, kpos_BxS = k_BxTxHxK, v_BxTxHxK, pos_BxT
            valid_BxS = jnp.ones((B, T), bool)

        bias_HxR = self._bias_table() if cfg.pos in ("relative", "position_only") else None
        drop = nn.Dropout(cfg.dropout)
        dropout = lambda p: drop(p, deterministic=deterministic)
        impl = "xla"  # capture and one-token decode steps: XLA by design (attention.py)
        if cfg.attention != "xla" and not return_pattern and (prefill or not self.decode):
            why = None
            if segments is not None:
                why = "segments-packed rows need the shared-prefix mask"
            elif not (blockwise or prefill):
                why = "explicit positions_BxT: the mask follows positions, not index order"
            impl = attention.choose(cfg, T, dropout_active=not deterministic and cfg.dropout > 0,
                                    call_reason=why)
        if impl != "xla":
            # Queries = keys in index order (a prefill's cache was empty): plain causal.
            idx_BxT = jnp.broadcast_to(jnp.arange(T, dtype=jnp.int32), (B, T))
            reference = lambda q, k, v: self._xla(cfg, q, k, v, idx_BxT, idx_BxT,
                                                  jnp.ones((B, T), bool), None, dropout,
                                                  True, False, None)[0]
            out_BxTxHxK = attention.causal(impl, q_BxTxHxK, k_BxTxHxK, v_BxTxHxK, reference)
            pattern_BxHxTxS = None
        else:
            out_BxTxHxK, pattern_BxHxTxS = self._xla(
                cfg, q_BxTxHxK if uses_qk else None, k_BxSxHxK, v_BxSxHxK, pos_BxT, kpos_BxS,
                valid_BxS, bias_HxR, dropout, blockwise, return_pattern, segments)
        w_HxKxD = self.param("out_kernel", _init(0.02 / jnp.sqrt(2 * cfg.num_layers),
                                                 ("heads", "kv", "embed")), (H, K, D))
        b_D = self.param("out_bias", _zeros(("embed",)), (D,))
        out_BxTxD = jnp.einsum("bthk,hkd->btd", out_BxTxHxK, w_HxKxD.astype(dt)) + b_D.astype(dt)
        return out_BxTxD, pattern_BxHxTxS if return_pattern else None

    @staticmethod
    def _xla(cfg, q_BxTxHxK, k_BxSxHxK, v_BxSxHxK, pos_BxT, kpos_BxS, valid_BxS, bias_HxR,
             dropout, blockwise, return_pattern, segments):
        """The reference attention: `_attend`, by query blocks when positions are index order."""
        T = pos_BxT.shape[1]
        if isinstance(segments, SharedPrefix):
            if not return_pattern:
                return _attend_shared_prefix(cfg, q_BxTxHxK, k_BxSxHxK, v_BxSxHxK, pos_BxT,
                                             segments, bias_HxR, dropout), None
            segments = (segments.segment, segments.context)  # the whole pattern
        if blockwise and T >= 2 * _BLOCK and T % _BLOCK == 0:
            # Causal block skipping: query block i only meets keys [0, (i+1)·Tb) (index order
            # = position order here), saving up to half of the attention FLOPs on long rows.
            outs, pats = [], []
            for start in range(0, T, _BLOCK):
                q_sl, k_sl = slice(start, start + _BLOCK), slice(0, start + _BLOCK)
                out, pat = _attend(cfg, None if q_BxTxHxK is None else q_BxTxHxK[:, q_sl],
                                   k_BxSxHxK[:, k_sl], v_BxSxHxK[:, k_sl], pos_BxT[:, q_sl],
                                   kpos_BxS[:, k_sl], valid_BxS[:, k_sl], bias_HxR, dropout)
                outs.append(out)
                if return_pattern:  # padded to [B, H, Tb, T] only for capture
                    pats.append(jnp.pad(pat, ((0, 0), (0, 0), (0, 0), (0, T - start - _BLOCK))))
            return (jnp.concatenate(outs, axis=1),
                    jnp.concatenate(pats, axis=2) if return_pattern else None)
        return _attend(cfg, q_BxTxHxK, k_BxSxHxK, v_BxSxHxK, pos_BxT, kpos_BxS, valid_BxS,
                       bias_HxR, dropout, segments)

    def _update_cache(self, k_BxTxHxK, v_BxTxHxK, pos_BxT):
        """Writes the chunk at the cache index; returns the full cache and its validity.

        Keys and values are stored heads-first ([B, H, S, K]): a one-token step's attention is
        then a batched matmul over (b, h) that reads the cache in place. Stored [B, S, H, K],
        XLA:CPU transposed the whole cache of every layer at every step (measured in the HLO
        of `generate`), which made decoding memory-bound on copies."""
        T = pos_BxT.shape[1]
        swap_heads = lambda x: jnp.swapaxes(x, 1, 2)  # [B, T, H, K] <-> [B, H, T, K]
        ck = self.variable("cache", "cached_key", jnp.zeros, swap_heads(k_BxTxHxK).shape,
                           k_BxTxHxK.dtype)  # K = 0 for schemes without keys
        cv = self.variable("cache", "cached_value", jnp.zeros, swap_heads(v_BxTxHxK).shape,
                           v_BxTxHxK.dtype)
        cpos = self.variable("cache", "cached_pos", lambda s: jnp.full(s, -1, jnp.int32),
                             pos_BxT.shape)
        idx = self.variable("cache", "index", lambda: jnp.zeros((), jnp.int32))
        if self.is_initializing():  # init_cache: shapes only, nothing written
            return swap_heads(ck.value), swap_heads(cv.value), cpos.value, cpos.value >= 0
        i = idx.value
        write = lambda c, x_BxTxHxK: jax.lax.dynamic_update_slice_in_dim(
            c, swap_heads(x_BxTxHxK).astype(c.dtype), i, axis=2)
        ck.value, cv.value = write(ck.value, k_BxTxHxK), write(cv.value, v_BxTxHxK)
        cpos.value = jax.lax.dynamic_update_slice_in_dim(cpos.value, pos_BxT, i, axis=1)
        idx.value = i + T
        return swap_heads(ck.value), swap_heads(cv.value), cpos.value, cpos.value >= 0


class Block(nn.Module):
    """Pre-LayerNorm transformer block: x + attn(ln(x)), then x + mlp(ln(x)).

    Returns `(x_BxTxD, pattern_BxHxTxS or None)`: the attention pattern only with
    `return_pattern` (capture), so a training step never materialises it outside the
    attention's own temporaries.
    """

    cfg: ModelConfig
    decode: bool = False

    @nn.compact
    def __call__(self, x_BxTxD, pos_BxT, deterministic: bool, blockwise: bool = False,
                 return_pattern: bool = False, segments=None, prefill: bool = False):
        cfg, dt = self.cfg, _dtype(self.cfg)
        ln = lambda name: nn.LayerNorm(
            1e-5, dtype=dt, name=name,
            scale_init=nn.with_logical_partitioning(nn.initializers.ones, ("norm",)),
            bias_init=_zeros(("norm",)))
        attn_BxTxD, pattern = Attention(cfg, self.decode, name="attn")(
            ln("ln_1")(x_BxTxD), pos_BxT, deterministic, blockwise, return_pattern, segments,
            prefill)
        x_BxTxD = x_BxTxD + nn.Dropout(cfg.dropout)(attn_BxTxD, deterministic=deterministic)
        h_BxTxF = nn.Dense(cfg.mlp_dim, dtype=dt, name="fc",
                           kernel_init=_init(0.02, ("embed", "mlp")),
                           bias_init=_zeros(("mlp",)),
                           )(ln("ln_2")(x_BxTxD))
        h_BxTxF = nn.with_logical_constraint(nn.gelu(h_BxTxF, approximate=True),
                                             ("batch", "length", "mlp"))
        mlp_BxTxD = nn.Dense(cfg.d_model, dtype=dt, name="proj",
                             kernel_init=_init(0.02 / jnp.sqrt(2 * cfg.num_layers),
                                               ("mlp", "embed")),
                             bias_init=_zeros(("embed",)),
                             )(h_BxTxF)
        x_BxTxD = x_BxTxD + nn.Dropout(cfg.dropout)(mlp_BxTxD, deterministic=deterministic)
        return nn.with_logical_constraint(x_BxTxD, ("batch", "length", "act_embed")), pattern


class GPT2(nn.Module):
    """Decoder-only LM. `vocab_size` must be resolved (> 0) before the model is built."""

    cfg: ModelConfig
    decode: bool = False

    @nn.compact
    def __call__(self, tokens_BxT: jax.Array, *, capture: Sequence[str] = (),
                 deterministic: bool = True, positions_BxT: jax.Array | None = None,
                 segments: tuple[jax.Array, jax.Array] | SharedPrefix | None = None,
                 prefill: bool = False):
        """`(logits_BxTxV, acts)`.

        `prefill` (decode only) promises an empty cache and a chunk whose tokens sit at
        positions 0, 1, ... from slot 0 on, pad (position -1) after them: `generate`'s prompt.
        It is then causal in slot order, so `model.attention`'s kernel can run it.
        `segments = (segment_BxT, context_BxT)` packs several short continuations of one shared
        context into a row (the V-probe's queries, `probing/igsm_queries.py`): segment 0 is the
        context, attended causally; a token of segment s > 0 sees its own segment causally and
        the context tokens at positions < its `context_BxT` (a truncated prefix), nothing else.
        Give `positions_BxT` with it (each segment continues after its prefix). A `SharedPrefix`
        (the same arrays and the row's layout) computes the same by blocks, much cheaper.
        """
        cfg, dt = self.cfg, _dtype(self.cfg)
        if segments is not None and (positions_BxT is None or self.decode):
            raise ValueError("segments need explicit positions_BxT and decode=False")
        if prefill and not self.decode:
            raise ValueError("prefill=True is for a decode=True model (the KV cache)")
        known = activation_names(cfg.num_layers)
        unknown = [n for n in capture if n not in known]
        if unknown:
            raise ValueError(f"capture names {unknown} unknown; known: {known}")
        if cfg.vocab_size <= 0:
            raise ValueError(f"model.vocab_size={cfg.vocab_size}: resolve it from the task first")
        B, T = tokens_BxT.shape
        blockwise = positions_BxT is None and not self.decode  # positions = index order
        if positions_BxT is None:
            positions_BxT = jnp.broadcast_to(jnp.arange(T, dtype=jnp.int32), (B, T))
            if self.decode:  # continue after what the cache already holds
                offset = self.variable("cache", "offset", lambda: jnp.zeros((), jnp.int32))
                positions_BxT = positions_BxT + offset.value
                if not self.is_initializing():
                    offset.value = offset.value + T
        acts: dict[str, jax.Array] = {}
        keep = lambda name, x: acts.__setitem__(name, x) if name in capture else None

        wte = nn.Embed(cfg.vocab_size, cfg.d_model, dtype=dt, name="wte",
                       embedding_init=_init(0.02, ("vocab", "embed")))
        x_BxTxD = wte(tokens_BxT)
        if cfg.pos == "absolute":
            wpe_LxD = self.param("wpe", _init(0.01, ("length", "embed")),
                                 (cfg.max_len, cfg.d_model))
            x_BxTxD = x_BxTxD + wpe_LxD[positions_BxT].astype(dt)
        x_BxTxD = nn.Dropout(cfg.dropout)(x_BxTxD, deterministic=deterministic)
        x_BxTxD = nn.with_logical_constraint(x_BxTxD, ("batch", "length", "act_embed"))
        keep("embed", x_BxTxD)
        policy = "none" if self.decode or self.is_initializing() else cfg.remat_mode
        for i in range(cfg.num_layers):
            name, want = f"blocks_{i}", f"blocks.{i}.attn.pattern" in capture
            if policy != "none" and not want:
                x_BxTxD = self._remat_block(name, x_BxTxD, positions_BxT, deterministic,
                                            blockwise, segments, policy)
            else:
                x_BxTxD, pattern = Block(cfg, self.decode, name=name)(
                    x_BxTxD, positions_BxT, deterministic, blockwise, want, segments, prefill)
                keep(f"blocks.{i}.attn.pattern", pattern)
            keep(f"blocks.{i}.resid_post", x_BxTxD)
        x_BxTxD = nn.LayerNorm(
            1e-5, dtype=dt, name="ln_f",
            scale_init=nn.with_logical_partitioning(nn.initializers.ones, ("norm",)),
            bias_init=_zeros(("norm",)))(x_BxTxD)
        keep("final", x_BxTxD)
        if cfg.tie_embeddings:
            logits_BxTxV = wte.attend(x_BxTxD)
        else:
            logits_BxTxV = nn.Dense(cfg.vocab_size, use_bias=False, dtype=dt, name="lm_head",
                                    kernel_init=_init(0.02, ("embed", "vocab")))(x_BxTxD)
        return logits_BxTxV.astype(jnp.float32), acts

    def _remat_block(self, name: str, x_BxTxD: jax.Array, pos_BxT: jax.Array,
                     deterministic: bool, blockwise: bool, segments=None,
                     policy: str = "full") -> jax.Array:
        """Block `name` keeping only its input (full), or also what `policy` saves."""
        params = self.variables["params"][name]
        key = None if deterministic or self.cfg.dropout == 0 else self.make_rng("dropout")
        block = Block(self.cfg, parent=None)

        def run(p, x_BxTxD, pos_BxT, key, segments):
            rngs = {} if key is None else {"dropout": key}
            return block.apply({"params": p}, x_BxTxD, pos_BxT, deterministic, blockwise,
                               False, segments, rngs=rngs)[0]

        if policy == "full":
            return recompute_in_backward(run, params, x_BxTxD, pos_BxT, key, segments)
        return recompute_with_policy(run, checkpoint_policy(policy), params, x_BxTxD, pos_BxT,
                                     key, segments)


def init_cache(model: GPT2, batch_size: int, max_len: int) -> dict:
    """An empty KV cache for `model` (built with decode=True) holding `max_len` positions."""
    shapes = jax.eval_shape(lambda: model.init(
        jax.random.key(0), jnp.zeros((batch_size, max_len), jnp.int32)))
    return _fresh_cache(shapes["cache"])


def _fresh_cache(shapes) -> dict:
    """Zeros everywhere except key positions, which start at -1 (= empty slot)."""
    def fill(path, s):
        name = jax.tree_util.keystr(path)
        return jnp.full(s.shape, -1 if name.endswith("'cached_pos']") else 0, s.dtype)
    return jax.tree_util.tree_map_with_path(fill, shapes)


def grow_cache(cache: dict, slots: int) -> dict:
    """`cache` with `slots` slots: the filled ones kept, the new ones empty (position -1).

    The decoder sizes the cache to what the next steps can fill and grows it between segments
    of its loop, so a step reads the keys it may need, not the longest buffer's."""
    def pad(path, x):
        name = jax.tree_util.keystr(path)
        if name.endswith("'cached_pos']"):  # [B, S]
            return jnp.pad(x, ((0, 0), (0, slots - x.shape[1])), constant_values=-1)
        if name.endswith("'cached_key']") or name.endswith("'cached_value']"):  # [B, H, S, K]
            return jnp.pad(x, ((0, 0), (0, 0), (0, slots - x.shape[2]), (0, 0)))
        return x
    return jax.tree_util.tree_map_with_path(pad, cache)
