"""Weight decay reaches exactly the projection matrices (attention included), nothing else."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from physics_lm.config import ModelConfig, OptimConfig
from physics_lm.models.gpt2 import GPT2
from physics_lm.train.optim import decay_mask, make_optimizer


def _params(pos: str, tie: bool):
    m = GPT2(ModelConfig(num_layers=2, num_heads=2, d_model=8, vocab_size=11, max_len=16,
                         pos=pos, tie_embeddings=tie))
    return nn.unbox(m.init(jax.random.key(0), jnp.zeros((1, 4), jnp.int32))["params"])


def _decayed(params) -> list[str]:
    leaves = jax.tree_util.tree_leaves_with_path(decay_mask(params))
    return sorted(jax.tree_util.keystr(k) for k, v in leaves if v)


def test_decayed_paths_are_every_projection_matrix():
    block = lambda i: [f"['blocks_{i}']['attn']['out_kernel']",
                       f"['blocks_{i}']['attn']['qkv_kernel']",
                       f"['blocks_{i}']['fc']['kernel']", f"['blocks_{i}']['proj']['kernel']"]
    blocks = block(0) + block(1)
    assert _decayed(_params("absolute", tie=False)) == sorted([*blocks, "['lm_head']['kernel']"])
    for pos in ("relative", "position_only", "rotary"):  # rel_bias, wpe, wte: never decayed
        assert _decayed(_params(pos, tie=True)) == sorted(blocks)


def test_decay_shrinks_attention_weights_and_spares_norms():
    params = _params("relative", tie=True)
    tx = make_optimizer(OptimConfig(lr=0.1, weight_decay=0.5, warmup_steps=0,
                                    schedule="constant", grad_clip=0.0), num_steps=10)
    zero = jax.tree.map(jnp.zeros_like, params)
    updates, _ = tx.update(zero, tx.init(params), params)
    new = optax.apply_updates(params, updates)
    attn = params["blocks_0"]["attn"]
    np.testing.assert_allclose(new["blocks_0"]["attn"]["qkv_kernel"], attn["qkv_kernel"] * 0.95,
                               rtol=1e-6)
    for name in ("rel_bias", "qkv_bias"):
        np.testing.assert_array_equal(new["blocks_0"]["attn"][name], attn[name])
    np.testing.assert_array_equal(new["wte"]["embedding"], params["wte"]["embedding"])
