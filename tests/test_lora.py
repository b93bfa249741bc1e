"""LoRA adapters: zero-init = the base model; merged = adapters applied by hand; training moves
only the adapters (base params bit-identical) and lowers the loss."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from physics_lm.config import ModelConfig
from physics_lm.models import lora
from physics_lm.models.gpt2 import GPT2

CFG = ModelConfig(num_layers=2, num_heads=2, d_model=16, vocab_size=12, max_len=16, pos="rotary")
TOKENS = jax.random.randint(jax.random.key(1), (4, 10), 0, 12)


def _base():
    return nn.unbox(GPT2(CFG).init(jax.random.key(0), TOKENS)["params"])


def _logits(params):
    return GPT2(CFG).apply({"params": params}, TOKENS)[0]


def test_zero_init_adapters_equal_the_base_model():
    base = _base()
    ad = lora.init_adapters(jax.random.key(2), base, qv_rank=4, embed_rank=8)
    assert set(ad) == {"wte", "blocks_0", "blocks_1"} and ad["wte"]["a"].shape == (12, 8)
    np.testing.assert_array_equal(_logits(lora.merge(base, ad)), _logits(base))


def test_merged_equals_adapters_applied_by_hand():
    base = _base()
    ad = lora.init_adapters(jax.random.key(2), base, qv_rank=3, embed_rank=5)
    ad = jax.tree.map(lambda x: x + 0.1 * jax.random.normal(jax.random.key(7), x.shape), ad)
    merged = lora.merge(base, ad)
    x_BxTxD = jax.random.normal(jax.random.key(3), (2, 5, 16))
    for i in range(2):
        w, a = base[f"blocks_{i}"]["attn"]["qkv_kernel"], ad[f"blocks_{i}"]
        got = jnp.einsum("btd,dnhk->btnhk", x_BxTxD, merged[f"blocks_{i}"]["attn"]["qkv_kernel"])
        ref = jnp.einsum("btd,dnhk->btnhk", x_BxTxD, w)
        q = ref[:, :, 0] + jnp.einsum("btr,rhk->bthk", x_BxTxD @ a["q"]["a"], a["q"]["b"])
        v = ref[:, :, 2] + jnp.einsum("btr,rhk->bthk", x_BxTxD @ a["v"]["a"], a["v"]["b"])
        np.testing.assert_allclose(got[:, :, 0], q, atol=1e-5)
        np.testing.assert_allclose(got[:, :, 1], ref[:, :, 1], atol=1e-6)  # keys untouched
        np.testing.assert_allclose(got[:, :, 2], v, atol=1e-5)
    rows = base["wte"]["embedding"][TOKENS] + (ad["wte"]["a"] @ ad["wte"]["b"])[TOKENS]
    np.testing.assert_allclose(merged["wte"]["embedding"][TOKENS], rows, atol=1e-6)
    assert not np.allclose(_logits(merged), _logits(base))


def test_training_moves_only_the_adapters():
    base = _base()
    snapshot = jax.tree.map(np.array, base)
    ad = lora.init_adapters(jax.random.key(2), base, qv_rank=2, embed_rank=4)
    tx = optax.adam(1e-2)

    def loss(adapters, frozen):
        logits = GPT2(CFG).apply({"params": lora.merge(jax.lax.stop_gradient(frozen), adapters)},
                                 TOKENS)[0]
        return optax.softmax_cross_entropy_with_integer_labels(logits[:, :-1],
                                                               TOKENS[:, 1:]).mean()

    @jax.jit
    def step(adapters, opt, frozen):
        value, g = jax.value_and_grad(loss)(adapters, frozen)
        updates, opt = tx.update(g, opt, adapters)
        return optax.apply_updates(adapters, updates), opt, value

    opt, first = tx.init(ad), None
    for _ in range(30):
        ad, opt, value = step(ad, opt, base)
        first = value if first is None else first
    assert value < first - 0.2, (first, value)
    jax.tree.map(np.testing.assert_array_equal, jax.tree.map(np.asarray, base), snapshot)


def test_attention_without_queries_is_refused():
    cfg = ModelConfig(num_layers=1, num_heads=2, d_model=8, vocab_size=5, max_len=8,
                      pos="position_only")
    params = nn.unbox(GPT2(cfg).init(jax.random.key(0), jnp.zeros((1, 4), jnp.int32))["params"])
    with pytest.raises(ValueError, match="no Q/V projections"):
        lora.init_adapters(jax.random.key(0), params, qv_rank=2, embed_rank=0)
    assert lora.count(lora.init_adapters(jax.random.key(0), params, qv_rank=0, embed_rank=2)) == 26
