"""Low-rank adapters as a pure transform of GPT-2 params (no second copy of the model code).

Legend: D d_model · H heads · K head dim · V vocab · r rank.

`init_adapters` makes the trainable state: rank-r factors for the query and value projections of
every block (the paper's "qv r") and a rank-r_e factor pair for the token embedding ("e 2r"; the
V-probe of Part 2.1 is the embedding part alone, r_e = 8). `merge(base, adapters)` returns the
params the model runs with: W + A·B on each adapted matrix. Called inside a jitted step, the
gradient reaches only the adapters and the base params enter as frozen inputs; merged once, the
same function exports a plain checkpoint. Every B factor starts at zero, so step 0 is exactly the
base model.

Tied embeddings: `wte` is both the input lookup and the output projection, so the embedding
update reaches the logits too (one matrix serves both). The V-probe reads hidden states, never the
logits, so for it the update is an input-embedding update.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

Params = dict[str, Any]


def block_names(params: Params) -> list[str]:
    return sorted((k for k in params if k.startswith("blocks_")), key=lambda k: int(k[7:]))


def init_adapters(key: jax.Array, params: Params, *, qv_rank: int, embed_rank: int) -> Params:
    """Adapters for `params` (a GPT-2 param tree); rank 0 leaves that part out.

    Returns {"wte": {"a": [V, r_e], "b": [r_e, D]}, "blocks_i": {"q"|"v": {"a": [D, r],
    "b": [r, H, K]}}}; `a` ~ N(0, 1/fan_in), `b` = 0.
    """
    if qv_rank < 0 or embed_rank < 0 or qv_rank + embed_rank == 0:
        raise ValueError(f"qv_rank={qv_rank}, embed_rank={embed_rank}: need >= 0, not both 0")
    out: Params = {}
    keys = iter(jax.random.split(key, 2 * len(block_names(params)) + 1))
    if embed_rank:
        Vv, D = params["wte"]["embedding"].shape
        out["wte"] = {"a": jax.random.normal(next(keys), (Vv, embed_rank)) / jnp.sqrt(D),
                      "b": jnp.zeros((embed_rank, D))}
    if qv_rank:
        for name in block_names(params):
            w_DxNxHxK = params[name]["attn"]["qkv_kernel"]
            if w_DxNxHxK.shape[1] != 3:
                raise ValueError(f"{name}: attention without queries (position_only/uniform) "
                                 "has no Q/V projections to adapt")
            D, _, H, K = w_DxNxHxK.shape
            out[name] = {part: {"a": jax.random.normal(next(keys), (D, qv_rank)) / jnp.sqrt(D),
                                "b": jnp.zeros((qv_rank, H, K))} for part in ("q", "v")}
    return out


def merge(base: Params, adapters: Params) -> Params:
    """The params with every adapter added (W + A·B); `base` itself is not changed."""
    params = dict(base)
    if "wte" in adapters:
        ad = adapters["wte"]
        params["wte"] = {**base["wte"], "embedding": base["wte"]["embedding"] + ad["a"] @ ad["b"]}
    for name, parts in adapters.items():
        if name == "wte":
            continue
        w_DxNxHxK = base[name]["attn"]["qkv_kernel"]
        for part, slot in (("q", 0), ("v", 2)):
            if part in parts:
                delta_DxHxK = jnp.einsum("dr,rhk->dhk", parts[part]["a"], parts[part]["b"])
                w_DxNxHxK = w_DxNxHxK.at[:, slot].add(delta_DxHxK.astype(w_DxNxHxK.dtype))
        params[name] = {**base[name], "attn": {**base[name]["attn"], "qkv_kernel": w_DxNxHxK}}
    return params


def count(adapters: Params) -> int:
    return int(sum(x.size for x in jax.tree.leaves(adapters)))
