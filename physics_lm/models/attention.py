"""Fused causal attention kernels behind `model.attention`, and when each one applies.

Legend as in gpt2.py: B batch · T length · H heads · K head dim.

  xla     `gpt2._attend`: the reference, every position scheme, every mask (causal block
          skipping for T >= 256), the attention pattern as a value (capture).
  cudnn   `jax.nn.dot_product_attention(implementation="cudnn", is_causal=True)`: cuDNN's flash
          attention on NVIDIA GPUs; bf16/fp16 only, so it needs model.compute_dtype=bfloat16.
  splash  the Pallas TPU splash-attention kernel (`jax.experimental.pallas.ops.tpu`) with a
          causal mask; T must be a multiple of 128. Chosen per platform at lowering time
          (`lax.platform_dependent`), so an ahead-of-time compile for a TPU topology from a CPU
          host lowers the kernel; anywhere else the XLA reference runs (after one warning).

Support matrix (what the kernels compute is plain causal softmax(q·k^T/sqrt(K))·v):
  absolute, rotary        yes (rotary is applied to q and k before the kernel)
  relative, position_only  no: a learned [H, T, S] bias with a gradient (not in these kernels)
  uniform                 no: a per-head window (1, 3, 7, ... tokens) and no q·k
  `segments`-packed rows  no: the V-probe's shared-prefix mask is not causal
  explicit positions      no: the mask follows positions, not index order (except prefill)
  attention dropout       no: the kernels have none (model.dropout > 0 while training)
  capture of the pattern  the XLA path by design: the kernels never form the pattern
  KV-cache decoding       the prefill (`GPT2(..., prefill=True)`: an empty cache and a
                          left-aligned prompt, what `eval.decode.generate` feeds) is causal in
                          slot order and uses the kernel; the one-token steps stay XLA (one
                          query over a position-masked cache: memory-bound, no kernel gains)

A request that cannot run falls back to XLA with one logged warning per reason and process, at
the first trace (model build). `model.attention_fallback=error` turns the model-level reasons
(scheme, dtype, dropout) into a ConfigError at config load and the shape and call-site reasons
into one at trace; a platform without the kernel (a CPU test, a TPU AOT compile's host) always
only warns, since tracing there is legitimate.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from physics_lm.config import ConfigError, ModelConfig

FUSED_SCHEMES = ("absolute", "rotary")
SPLASH_BLOCKS = (512, 256, 128)  # the largest dividing T is the kernel's block
# The code path's switches, substituted by the CPU tests to run the kernels' layout and masking
# logic here: jax.nn.dot_product_attention's "xla" implementation, Pallas interpret mode.
CUDNN_IMPLEMENTATION = "cudnn"
CUDNN_BACKENDS = ("gpu",)
SPLASH_PLATFORM = "tpu"

_warned: set[str] = set()
# How the kernels appear in a compiled program's HLO: a Pallas TPU kernel (splash) is a Mosaic
# `tpu_custom_call`, cuDNN's fused attention a `__cudnn$fmha...` custom call.
_KERNEL_CALL = re.compile(r'custom_call_target="(tpu_custom_call|__cudnn\$fmha[^"]*)"')


def kernel_calls(hlo_text: str) -> int:
    """Fused attention kernel calls in a compiled program's text (0: XLA attention only): the
    check that a requested kernel really runs (the AOT fit check, the accelerator suite)."""
    return len(_KERNEL_CALL.findall(hlo_text))


def model_fallback_reason(m: ModelConfig) -> str | None:
    """Why `m.attention` can never run for this model (None: it can, or it is xla)."""
    if m.attention == "xla":
        return None
    if m.pos not in FUSED_SCHEMES:
        why = {"relative": "a learned relative-distance bias", "uniform": "per-head windows",
               "position_only": "a learned bias and no q.k"}[m.pos]
        return f"pos={m.pos} needs {why}; the {m.attention} kernel is plain causal softmax(q.k)"
    if m.attention == "cudnn" and m.compute_dtype != "bfloat16":
        return (f"cuDNN flash attention computes in bf16/fp16 only and model.compute_dtype="
                f"{m.compute_dtype} (casting would change the numerics)")
    if m.dropout > 0:
        return f"model.dropout={m.dropout}: the kernels have no attention-probability dropout"
    return None


def _fall_back(m: ModelConfig, reason: str, strict: bool = True) -> str:
    msg = f"model.attention={m.attention} (pos={m.pos}) falls back to XLA attention: {reason}"
    if strict and m.attention_fallback == "error":
        raise ConfigError(msg + " (model.attention_fallback=error)")
    if msg not in _warned:
        _warned.add(msg)
        logging.warning(msg)
    return "xla"


def choose(m: ModelConfig, seq_len: int, *, dropout_active: bool,
           call_reason: str | None = None) -> str:
    """The implementation one attention call runs: `m.attention`, or "xla" after a warning.

    `call_reason`: why this call site needs the general mask (segments, explicit positions).
    """
    if m.attention == "xla":
        return "xla"
    reason = model_fallback_reason(m)
    if reason is None and dropout_active:
        reason = "attention dropout is active and the kernels have none"
    if reason is None and call_reason is not None:
        reason = call_reason
    if reason is None and m.attention == "splash" and seq_len % SPLASH_BLOCKS[-1]:
        reason = f"the splash kernel needs T % {SPLASH_BLOCKS[-1]} == 0, T={seq_len}"
    if reason is not None:
        return _fall_back(m, reason)
    backend = jax.default_backend()
    if m.attention == "cudnn" and backend not in CUDNN_BACKENDS:
        # cuDNN is looked up while tracing, so this is decided here, not at lowering.
        return _fall_back(m, f"the {backend} backend has no cuDNN", strict=False)
    if m.attention == "splash" and backend != SPLASH_PLATFORM:
        _fall_back(m, f"splash runs on TPUs only, this is a {backend} backend (an ahead-of-time "
                      "compile for a TPU topology still lowers the kernel)", strict=False)
    return m.attention


def causal(impl: str, q_BxTxHxK: jax.Array, k_BxTxHxK: jax.Array, v_BxTxHxK: jax.Array,
           reference: Callable[[jax.Array, jax.Array, jax.Array], jax.Array]) -> jax.Array:
    """Causal attention (keys = queries' positions, index order) by the fused kernel `impl`.

    `reference(q, k, v)` is the XLA path, what splash lowers to off TPUs.
    """
    if impl == "cudnn":
        return jax.nn.dot_product_attention(q_BxTxHxK, k_BxTxHxK, v_BxTxHxK, is_causal=True,
                                            implementation=CUDNN_IMPLEMENTATION)
    if impl == "splash":
        return jax.lax.platform_dependent(q_BxTxHxK, k_BxTxHxK, v_BxTxHxK,
                                          **{SPLASH_PLATFORM: splash_causal}, default=reference)
    raise ValueError(f"no fused kernel {impl!r}")


def _splash_kernel(seq_len: int, heads: int, interpret: bool):
    from jax.experimental.pallas.ops.tpu.splash_attention import (
        splash_attention_kernel as sk,
    )
    from jax.experimental.pallas.ops.tpu.splash_attention import (
        splash_attention_mask as sm,
    )

    block = next(b for b in SPLASH_BLOCKS if seq_len % b == 0)
    sizes = sk.BlockSizes(block_q=block, block_kv=block, block_kv_compute=block,
                          block_q_dkv=block, block_kv_dkv=block, block_kv_dkv_compute=block,
                          block_q_dq=block, block_kv_dq=block)
    mask = sm.MultiHeadMask([sm.CausalMask((seq_len, seq_len)) for _ in range(heads)])
    # Built per trace, not cached: the kernel holds its mask tables as arrays of that trace.
    return sk.make_splash_mha(mask, block_sizes=sizes, head_shards=1, q_seq_shards=1,
                              interpret=interpret)


def _local_splash(q_BxTxHxK: jax.Array, k_BxTxHxK: jax.Array, v_BxTxHxK: jax.Array
                  ) -> jax.Array:
    T, H, K = q_BxTxHxK.shape[1:]
    kernel = _splash_kernel(T, H, SPLASH_PLATFORM != "tpu")
    hm = lambda x: jnp.swapaxes(x, 1, 2)  # the kernel's layout is [H, T, K] per row
    q = q_BxTxHxK * jnp.asarray(1 / np.sqrt(K), q_BxTxHxK.dtype)  # the kernel does not scale
    return hm(jax.vmap(kernel)(hm(q), hm(k_BxTxHxK), hm(v_BxTxHxK)))


def _mesh_spec(shape_BxTxHxK: tuple[int, ...]) -> jax.sharding.PartitionSpec | None:
    """Batch over the data axes and heads over `tensor`, as the logical rules place them."""
    from physics_lm.train.sharding import BATCH_AXES

    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty or mesh.size == 1:
        return None
    sizes = dict(zip(mesh.axis_names, mesh.axis_sizes, strict=True))
    batch = tuple(a for a in BATCH_AXES if sizes.get(a, 1) > 1)
    if int(np.prod([sizes[a] for a in batch])) > 1 and shape_BxTxHxK[0] % int(
            np.prod([sizes[a] for a in batch])):
        batch = ()
    heads = "tensor" if sizes.get("tensor", 1) > 1 and shape_BxTxHxK[2] % sizes["tensor"] == 0 \
        else None
    return jax.sharding.PartitionSpec(batch or None, None, heads, None)


def splash_causal(q_BxTxHxK: jax.Array, k_BxTxHxK: jax.Array, v_BxTxHxK: jax.Array
                  ) -> jax.Array:
    """The splash kernel per device: a Pallas call has no partitioning rule, so under a mesh
    it runs in `shard_map` (rows over the data axes, heads over `tensor`)."""
    spec = _mesh_spec(q_BxTxHxK.shape)
    if spec is None:
        return _local_splash(q_BxTxHxK, k_BxTxHxK, v_BxTxHxK)
    return jax.shard_map(_local_splash, in_specs=(spec,) * 3, out_specs=spec,
                         check_vma=False)(q_BxTxHxK, k_BxTxHxK, v_BxTxHxK)
