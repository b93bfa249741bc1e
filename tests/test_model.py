"""GPT-2 family: shapes, the pinned activation names, causality, KV-cache decode, dtypes."""

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from physics_lm.config import POSITION_SCHEMES, ModelConfig
from physics_lm.models.gpt2 import GPT2, SharedPrefix, activation_names, init_cache


def _model(pos: str, **kw) -> tuple[GPT2, dict]:
    cfg = ModelConfig(num_layers=2, num_heads=4, d_model=32, vocab_size=11, max_len=32, pos=pos,
                      **kw)
    model = GPT2(cfg)
    params = nn.unbox(model.init(jax.random.key(0), jnp.zeros((1, 16), jnp.int32))["params"])
    return model, params


TOKENS = jax.random.randint(jax.random.key(1), (2, 16), 0, 11)


def test_activation_names_are_pinned():
    assert activation_names(2) == (
        "embed", "blocks.0.attn.pattern", "blocks.0.resid_post",
        "blocks.1.attn.pattern", "blocks.1.resid_post", "final")
    model, params = _model("rotary")
    logits, acts = model.apply({"params": params}, TOKENS, capture=activation_names(2))
    assert logits.shape == (2, 16, 11) and logits.dtype == jnp.float32
    assert set(acts) == set(activation_names(2))
    assert acts["blocks.1.attn.pattern"].shape == (2, 4, 16, 16)
    assert acts["final"].shape == (2, 16, 32)
    with pytest.raises(ValueError, match=r"blocks\.7\.resid_post"):
        model.apply({"params": params}, TOKENS, capture=("blocks.7.resid_post",))


@pytest.mark.parametrize("pos", POSITION_SCHEMES)
def test_causal_and_kv_cache_matches_full_forward(pos):
    model, params = _model(pos)
    full, acts = model.apply({"params": params}, TOKENS, capture=("blocks.0.attn.pattern",))
    pattern = np.asarray(acts["blocks.0.attn.pattern"])
    assert np.allclose(np.triu(pattern, k=1), 0.0)  # nothing attends to the future
    np.testing.assert_allclose(pattern.sum(-1), 1.0, rtol=1e-5)
    changed = TOKENS.at[:, 10:].set(3)
    prefix, _ = model.apply({"params": params}, changed)
    np.testing.assert_allclose(prefix[:, :10], full[:, :10], atol=1e-5)
    assert not np.allclose(prefix[:, 10:], full[:, 10:], atol=1e-3)

    decoder = GPT2(model.cfg, decode=True)
    cache = init_cache(decoder, 2, 16)
    outs = []
    for chunk in (slice(0, 5), *[slice(t, t + 1) for t in range(5, 16)]):
        (logits, _), mutated = decoder.apply({"params": params, "cache": cache}, TOKENS[:, chunk],
                                             mutable=["cache"])
        cache = mutated["cache"]
        outs.append(logits)
    np.testing.assert_allclose(np.concatenate(outs, 1), full, atol=1e-4)


def test_uniform_heads_average_their_windows():
    model, params = _model("uniform")
    _, acts = model.apply({"params": params}, TOKENS, capture=("blocks.0.attn.pattern",))
    p = np.asarray(acts["blocks.0.attn.pattern"])[0]  # [H, T, S]
    for h in range(4):
        window = 2 ** (h + 1) - 1
        row = p[h, 12]
        expected = np.zeros(16)
        expected[max(0, 12 - window + 1): 13] = 1.0 / min(window, 13)
        np.testing.assert_allclose(row, expected, atol=1e-6)


def test_position_only_ignores_token_content_in_pattern():
    model, params = _model("position_only")
    _, a = model.apply({"params": params}, TOKENS, capture=("blocks.1.attn.pattern",))
    _, b = model.apply({"params": params}, (TOKENS + 5) % 11, capture=("blocks.1.attn.pattern",))
    np.testing.assert_allclose(a["blocks.1.attn.pattern"], b["blocks.1.attn.pattern"], atol=1e-6)


def test_bf16_compute_keeps_fp32_params():
    model, params = _model("absolute", compute_dtype="bfloat16")
    assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(params))
    logits, _ = model.apply({"params": params}, TOKENS)
    ref, _ = _model("absolute")[0].apply({"params": params}, TOKENS)
    assert logits.dtype == jnp.float32
    np.testing.assert_allclose(logits, ref, atol=0.05)


def test_untied_head_and_param_count():
    _, params = _model("absolute", tie_embeddings=False)
    assert "lm_head" in params
    tied = _model("absolute")[1]
    n = lambda p: sum(x.size for x in jax.tree.leaves(p))
    assert n(params) - n(tied) == 32 * 11


@pytest.mark.parametrize("pos", ["rotary", "relative", "uniform"])
def test_causal_block_skipping_equals_full_attention(pos):
    cfg = ModelConfig(num_layers=1, num_heads=2, d_model=16, vocab_size=5, max_len=256, pos=pos)
    model = GPT2(cfg)
    tokens = jax.random.randint(jax.random.key(2), (1, 256), 0, 5)
    params = nn.unbox(model.init(jax.random.key(0), tokens[:, :4])["params"])
    name = ("blocks.0.attn.pattern",)
    fast, a = model.apply({"params": params}, tokens, capture=name)  # blockwise (T = 2 blocks)
    full, b = model.apply({"params": params}, tokens, capture=name,  # explicit positions: one block
                          positions_BxT=jnp.arange(256)[None])
    np.testing.assert_allclose(fast, full, atol=1e-5)
    np.testing.assert_allclose(a[name[0]], b[name[0]], atol=1e-6)


@pytest.mark.parametrize("pos", POSITION_SCHEMES)
@pytest.mark.parametrize("remat", [False, True])
def test_shared_prefix_blocks_equal_the_segment_mask(pos, remat):
    """The V-probe's packed rows (a context, then queries that each see a truncated context and
    themselves): the block-wise `SharedPrefix` attention gives the tuple form's activations and
    parameter gradients, for every scheme, with and without remat."""
    C, Q, L, B = 12, 3, 5, 2
    cfg = ModelConfig(num_layers=2, num_heads=4, d_model=32, vocab_size=11, max_len=32, pos=pos,
                      rel_max_distance=6, remat=remat)
    model = GPT2(cfg)
    tokens = jax.random.randint(jax.random.key(3), (B, C + Q * L), 0, 11)
    params = nn.unbox(model.init(jax.random.key(0), tokens[:, :4])["params"])
    cut = jnp.asarray([[2, 11, 6], [0, 7, 7]])  # each query continues after context token `cut`
    q_pos = (cut[..., None] + 1 + jnp.arange(L)).reshape(B, Q * L)
    positions = jnp.concatenate([jnp.broadcast_to(jnp.arange(C), (B, C)), q_pos], axis=1)
    seg = jnp.broadcast_to(jnp.concatenate([jnp.zeros(C, int), jnp.repeat(jnp.arange(1, Q + 1),
                                                                            L)]), (B, C + Q * L))
    ctx = jnp.concatenate([jnp.full((B, C), 10**6), jnp.repeat(cut + 1, L, axis=1)], axis=1)

    def final(p, segments):
        _, acts = model.apply({"params": p}, tokens, capture=("final",), positions_BxT=positions,
                              segments=segments)
        return acts["final"]

    layout = SharedPrefix(seg, ctx, prefix_len=C, segment_len=L)
    want, got = final(params, (seg, ctx)), final(params, layout)
    np.testing.assert_allclose(got, want, atol=2e-5)
    loss = lambda segments: lambda p: jnp.sum(jnp.sin(final(p, segments)))
    g_want, g_got = jax.grad(loss((seg, ctx)))(params), jax.grad(loss(layout))(params)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(  # f32 sums in another order
        a, b, rtol=1e-4, atol=1e-5 * float(np.abs(b).max())), g_got, g_want)
    with pytest.raises(ValueError, match="does not tile"):
        final(params, SharedPrefix(seg, ctx, prefix_len=C, segment_len=4))


def _shapes_in(jaxpr) -> set[tuple[int, ...]]:
    """Shapes of every value a jaxpr (and the jaxprs nested in its equations) computes."""
    out = set()
    for eqn in jaxpr.eqns:
        out.update(tuple(getattr(v.aval, "shape", ())) for v in eqn.outvars)
        for p in eqn.params.values():
            for j in p if isinstance(p, list | tuple) else (p,):
                inner = getattr(j, "jaxpr", j)
                if hasattr(inner, "eqns"):
                    out |= _shapes_in(inner)
    return out


def test_pattern_is_built_only_when_captured():
    model, params = _model("rotary")
    tokens = jnp.zeros((1, 256), jnp.int32)  # blockwise attention: query blocks of 128
    shapes = lambda capture: _shapes_in(jax.make_jaxpr(
        lambda p: model.apply({"params": p}, tokens, capture=capture))(params).jaxpr)
    assert (1, 4, 256, 256) not in shapes(("blocks.1.resid_post",))
    assert (1, 4, 256, 256) in shapes(("blocks.0.attn.pattern",))


def test_remat_recomputes_the_same_values_and_keeps_only_block_inputs():
    model, params = _model("rotary")
    remat = GPT2(dataclasses.replace(model.cfg, remat=True))
    tokens = jax.random.randint(jax.random.key(3), (2, 32), 0, 11)
    loss = lambda m: lambda p, t: jnp.mean(jax.nn.log_softmax(m.apply({"params": p}, t)[0]) ** 2)
    ref, g_ref = jax.value_and_grad(loss(model))(params, tokens)
    got, g_got = jax.value_and_grad(loss(remat))(params, tokens)
    # Same math, but XLA may fuse the recomputed forward differently (CI's CPU differed from
    # this one in the last bit): equal up to float32 rounding, not bit-for-bit.
    np.testing.assert_allclose(got, ref, rtol=1e-6)
    for a, b in zip(jax.tree.leaves(g_ref), jax.tree.leaves(g_got), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
    _, a = remat.apply({"params": params}, tokens, capture=activation_names(2))
    _, b = model.apply({"params": params}, tokens, capture=activation_names(2))
    for n in activation_names(2):
        np.testing.assert_allclose(a[n], b[n], rtol=1e-6, atol=1e-6, err_msg=n)
    # Compiled temporaries of the gradient: each block's activations are recomputed in the
    # backward pass, not kept (XLA:CPU undid nn.remat here: see physics_lm/models/remat.py).
    big = jax.ShapeDtypeStruct((2, 128), jnp.int32)
    temp = lambda m: jax.jit(jax.grad(loss(m))).lower(params, big).compile(
        ).memory_analysis().temp_size_in_bytes
    assert temp(remat) < 0.7 * temp(model)
