"""model.attention (cudnn / splash code paths on this CPU), its loud fallbacks, remat policies.

cuDNN is looked up while tracing, so the cudnn path runs here with jax.nn.dot_product_attention's
"xla" implementation substituted (same layout, masking and call); splash runs in Pallas
interpret mode. Both are compared with the XLA reference (`model.attention=xla`).
"""

import dataclasses
import logging

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from physics_lm.config import ConfigError, ModelConfig, from_config_dict
from physics_lm.eval.decode import cached_backend
from physics_lm.models import attention
from physics_lm.models.gpt2 import GPT2


@pytest.fixture
def on_cpu(monkeypatch):
    """Both kernels' code paths, runnable on CPU."""
    monkeypatch.setattr(attention, "CUDNN_IMPLEMENTATION", "xla")
    monkeypatch.setattr(attention, "CUDNN_BACKENDS", ("cpu",))
    monkeypatch.setattr(attention, "SPLASH_PLATFORM", "cpu")
    monkeypatch.setattr(attention, "_warned", set())


def _cfg(**kw) -> ModelConfig:
    base = dict(num_layers=2, num_heads=2, d_model=32, vocab_size=13, max_len=256, pos="rotary")
    return ModelConfig(**{**base, **kw})


def _loss_and_grads(cfg: ModelConfig, params, tokens):
    def loss(p):
        logits, _ = GPT2(cfg).apply({"params": p}, tokens)
        return jnp.mean(jax.nn.log_softmax(logits)[..., 0])
    return jax.jit(jax.value_and_grad(loss))(params)


def _params(cfg: ModelConfig):
    return nn.unbox(GPT2(cfg).init(jax.random.key(0), jnp.zeros((1, 8), jnp.int32))["params"])


def _close(a, b, atol):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_allclose(np.asarray(x, np.float32), np.asarray(y, np.float32),
                                   atol=atol, rtol=atol)


def test_cudnn_path_matches_xla(on_cpu):
    ref = _cfg(pos="absolute", compute_dtype="bfloat16")  # rotary: the splash test
    params = _params(ref)
    tokens = jax.random.randint(jax.random.key(1), (2, 64), 0, 13)
    want = GPT2(ref).apply({"params": params}, tokens)[0]
    got = GPT2(dataclasses.replace(ref, attention="cudnn")).apply({"params": params}, tokens)[0]
    _close(got, want, atol=2e-2)  # bf16 compute: the two attentions round differently
    # The kernel call itself, float32: [B, T, H, K] layout and causal masking are the reference's.
    q, k, v = jax.random.normal(jax.random.key(2), (3, 2, 40, 2, 16))
    ones = jnp.ones((2, 40), bool)
    idx = jnp.broadcast_to(jnp.arange(40), (2, 40))
    from physics_lm.models.gpt2 import _attend
    want = _attend(_cfg(), q, k, v, idx, idx, ones, None, lambda p: p)[0]
    _close(attention.causal("cudnn", q, k, v, None), want, atol=1e-5)


def test_splash_interpret_matches_xla_with_remat_and_prefill(on_cpu):
    ref = _cfg()
    params = _params(ref)
    tokens = jax.random.randint(jax.random.key(1), (2, 128), 0, 13)
    want = _loss_and_grads(ref, params, tokens)
    splash = dataclasses.replace(ref, attention="splash", remat_policy="full")
    _close(_loss_and_grads(splash, params, tokens), want, atol=1e-4)
    # KV-cache prefill (ragged prompts in a 128-slot buffer) runs the kernel; the cache and the
    # next-token logits equal the XLA decoder's, and so does the following one-token step.
    plen = jnp.array([5, 128], jnp.int32)
    outs = [cached_backend(c, params, tokens, plen, 130) for c in (ref, splash)]
    (c_ref, l_ref, f_ref), (c_spl, l_spl, f_spl) = outs
    _close(l_spl, l_ref, atol=1e-4)
    _close(_read_slots(c_spl), _read_slots(c_ref), atol=1e-4)
    buf = jnp.concatenate([tokens, jnp.full((2, 2), 3)], 1)
    (c_spl, l_spl), (c_ref, l_ref) = f_spl(c_spl, buf, plen + 1), f_ref(c_ref, buf, plen + 1)
    _close((_read_slots(c_spl), l_spl), (_read_slots(c_ref), l_ref), atol=1e-4)


def _read_slots(cache):
    """The cache with the keys/values of empty slots (position -1: never read) zeroed."""
    flat = {jax.tree_util.keystr(p): x for p, x in jax.tree_util.tree_flatten_with_path(cache)[0]}
    out = {}
    for name, x in flat.items():
        if x.ndim == 4:
            pos_BxS = flat[name.replace("cached_key", "cached_pos").replace("cached_value",
                                                                            "cached_pos")]
            x = jnp.where((pos_BxS >= 0)[:, None, :, None], x, 0)  # [B, H, S, K]
        out[name] = x
    return out


def test_splash_under_a_data_parallel_mesh(on_cpu):
    q, k, v = jax.random.normal(jax.random.key(3), (3, 8, 128, 2, 16))
    want = attention._local_splash(q, k, v)
    mesh = jax.make_mesh((8, 1, 1), ("data", "fsdp", "tensor"),
                         axis_types=(jax.sharding.AxisType.Auto,) * 3)
    with jax.set_mesh(mesh):
        got = jax.jit(attention.splash_causal)(q, k, v)
    _close(got, want, atol=1e-5)


def test_unsupported_schemes_fall_back_loudly_once(on_cpu, caplog):
    cfg = _cfg(pos="relative", attention="cudnn", compute_dtype="bfloat16")
    params = _params(_cfg(pos="relative", compute_dtype="bfloat16"))
    tokens = jnp.zeros((1, 16), jnp.int32)
    with caplog.at_level(logging.WARNING):
        got = GPT2(cfg).apply({"params": params}, tokens)[0]
    warned = [r.getMessage() for r in caplog.records if "falls back" in r.getMessage()]
    assert len(warned) == 1 and "pos=relative" in warned[0], warned  # two layers, one warning
    want = GPT2(_cfg(pos="relative", compute_dtype="bfloat16")).apply({"params": params},
                                                                       tokens)[0]
    np.testing.assert_array_equal(got, want)
    model = {"num_layers": 2, "num_heads": 2, "d_model": 32, "pos": "uniform"}
    for bad, match in [({"attention": "flash"}, "model.attention='flash'"),
                       ({"attention": "splash", "attention_fallback": "error"}, "pos=uniform"),
                       ({"attention": "cudnn", "attention_fallback": "error", "pos": "rotary",
                         "compute_dtype": "float32"}, "bf16/fp16"),
                       ({"remat_policy": "some"}, "model.remat_policy"),
                       ({"remat": True, "remat_policy": "none"}, "contradicts")]:
        with pytest.raises(ConfigError, match=match):
            from_config_dict({"model": {**model, **bad}})
    assert from_config_dict({"model": {"remat": True}}).model.remat_mode == "full"
    strict = dataclasses.replace(cfg, pos="rotary", attention_fallback="error")
    with pytest.raises(ConfigError, match="segments"):  # a call-site reason, at trace
        GPT2(strict).apply({"params": _params(_cfg())}, tokens,
                           positions_BxT=jnp.zeros((1, 16), jnp.int32),
                           segments=(jnp.zeros((1, 16), jnp.int32),) * 2)


def test_remat_policies_give_the_same_gradients():
    ref = _cfg(max_len=32)
    params = _params(ref)
    tokens = jax.random.randint(jax.random.key(1), (2, 32), 0, 13)
    want = _loss_and_grads(ref, params, tokens)
    for policy in ("full", "save_dots", "offload"):
        got = _loss_and_grads(dataclasses.replace(ref, remat_policy=policy), params, tokens)
        _close(got, want, atol=1e-5)


def test_kernel_calls_counts_the_fused_kernels_in_hlo():
    """The check the AOT tool and the accelerator suite print: Mosaic (Pallas TPU) and cuDNN
    fused-attention custom calls count, other custom calls and plain dots do not."""
    hlo = "\n".join([
        '%a = f32[8] custom-call(%x), custom_call_target="tpu_custom_call", backend_config=...',
        '%b = bf16[8] custom-call(%x), custom_call_target="__cudnn$fmhaSoftmax"',
        '%c = bf16[8] custom-call(%x), custom_call_target="__cudnn$fmhaSoftmaxBackward"',
        '%d = f32[8] custom-call(%x), custom_call_target="__cublas$gemm"',
        '%e = f32[8,8] dot(%x, %y), lhs_contracting_dims={1}, rhs_contracting_dims={0}'])
    assert attention.kernel_calls(hlo) == 3
    assert attention.kernel_calls(hlo.replace("tpu_custom_call", "Sharding")) == 2
