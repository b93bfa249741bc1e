"""Rematerialisation that holds on every XLA backend: keep a block's inputs, recompute the rest.

`jax.checkpoint` (`nn.remat`) keeps XLA from merging the backward pass's recomputation into the
forward pass with an optimization barrier. XLA:CPU expands those barriers right after its first
CSE pass, and the CSE after layout assignment then merges the recomputation back into the
forward, so every block's temporaries stay alive until the backward pass: measured on this CPU,
4 GPT2-20-9 blocks at batch 8 needed 3.17 GB with `nn.remat` and 3.20 GB without (XLA:GPU expands
the barriers only after scheduling). The compiled memory analysis is how this project checks
that a run fits, so remat must hold there too.

`recompute_in_backward` is a custom VJP: the forward keeps only its arguments; the backward reads
the input through `x + 0 * ct[:, :1, :1]` and the parameters through `p + 0 * ct[0, 0, 0]`, a
data dependence on the output's cotangent that no pass removes (XLA folds `y * 0` for integers
only, because of NaN), then recomputes and differentiates. The recomputation can neither be
merged with the forward nor be scheduled before the backward pass reaches the block (reading
the parameters without the dependence left their [B, T, F] broadcasts alive: 1.75 GB instead of
0.95 GB for GPT2-20-9 at batch 8). Values are unchanged for finite cotangents; a non-finite one
makes the gradients NaN, which it would have made non-finite anyway. On a batch-sharded mesh
`ct[0, 0, 0]` is one scalar sent from the first data shard, once per block of the backward pass.

Policies (`model.remat_policy`, `checkpoint_policy`): "full" is the above. "save_dots" and
"offload" keep more than the input, trading memory for less recomputation on accelerators:
`recompute_with_policy` runs the block under `jax.checkpoint(policy=...)` inside the same kind of
custom VJP, whose residuals are what the policy saves (save_dots: the outputs of matmuls without
batch dimensions, i.e. the projections and MLP, `dots_with_no_batch_dims_saveable`; offload: the
same, moved to pinned host memory, `offload_dot_with_no_batch_dims`). The backward reads those
residuals through the same `0 * ct` dependence, so XLA:CPU's analysis also sees the policy (and
not the forward's temporaries). Offload needs a backend with a `pinned_host` memory; elsewhere
it runs as save_dots after one warning.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from absl import logging


def recompute_in_backward(fn: Callable[..., jax.Array], params: Any, x_BxTxD: jax.Array,
                          *consts: Any) -> jax.Array:
    """`fn(params, x_BxTxD, *consts) -> y_BxTxD`, keeping only the arguments for the backward.

    Differentiable in `params` and `x_BxTxD`; `consts` (positions, a dropout key) get no
    gradient. `fn` must be pure: the backward pass calls it again on the same arguments.
    """

    @jax.custom_vjp
    def call(params, x_BxTxD, consts):
        return fn(params, x_BxTxD, *consts)

    def fwd(params, x_BxTxD, consts):
        return fn(params, x_BxTxD, *consts), (params, x_BxTxD, consts)

    def bwd(res, ct_BxTxD):
        params, x_BxTxD, consts = res
        zero_Bx1x1 = 0 * ct_BxTxD[:, :1, :1]
        x_BxTxD = x_BxTxD + zero_Bx1x1.astype(x_BxTxD.dtype)
        # The parameters too: else their broadcasts (biases, LayerNorm scales, materialised
        # at [B, T, F] by XLA:CPU) are shared with the forward pass and live until here.
        zero = zero_Bx1x1[0, 0, 0].astype(jnp.float32)  # one element (a scalar broadcast)
        params = jax.tree.map(lambda p: p + zero.astype(p.dtype), params)
        _, vjp = jax.vjp(lambda p, x: fn(p, x, *consts), params, x_BxTxD)
        d_params, d_x = vjp(ct_BxTxD)
        return d_params, d_x, None

    call.defvjp(fwd, bwd)
    return call(params, x_BxTxD, consts)


def checkpoint_policy(name: str) -> Callable[..., Any]:
    """The `jax.checkpoint` policy of `model.remat_policy` save_dots / offload."""
    cp = jax.checkpoint_policies
    if name == "offload":
        kinds = {m.kind for m in jax.devices()[0].addressable_memories()}
        if "pinned_host" in kinds:
            return cp.offload_dot_with_no_batch_dims("device", "pinned_host")
        logging.warning("model.remat_policy=offload: the %s backend has no pinned_host memory "
                        "(has %s); saving the dots on the device instead (save_dots)",
                        jax.default_backend(), sorted(kinds))
    elif name != "save_dots":
        raise ValueError(f"no checkpoint policy for remat_policy={name!r}")
    return cp.dots_with_no_batch_dims_saveable


def _after(tree: Any, zero: jax.Array) -> Any:
    """`tree` with `zero` (0, computed from a cotangent) added to its float leaves."""
    add = lambda a: a + zero.astype(a.dtype) if jnp.issubdtype(a.dtype, jnp.inexact) else a
    return jax.tree.map(add, tree)


def recompute_with_policy(fn: Callable[..., jax.Array], policy: Callable[..., Any],
                          params: Any, x_BxTxD: jax.Array, *consts: Any) -> jax.Array:
    """Like `recompute_in_backward`, but keeps what `policy` saves (and the arguments)."""

    @jax.custom_vjp
    def call(params, x_BxTxD, consts):
        return fn(params, x_BxTxD, *consts)

    def fwd(params, x_BxTxD, consts):
        kept = jax.checkpoint(lambda p, x: fn(p, x, *consts), policy=policy)
        y, vjp = jax.vjp(kept, params, x_BxTxD)  # vjp: a pytree of the saved residuals
        return y, vjp

    def bwd(vjp, ct_BxTxD):
        zero = (0 * ct_BxTxD[:, :1, :1])[0, 0, 0].astype(jnp.float32)
        if policy is not jax.checkpoint_policies.dots_with_no_batch_dims_saveable:
            # offloaded residuals live in host memory: arithmetic there is not allowed, so
            # only the arguments-to-be-recomputed get the dependence (through the cotangent)
            d_params, d_x = vjp(ct_BxTxD)
        else:
            d_params, d_x = _after(vjp, zero)(ct_BxTxD)
        return d_params, d_x, None

    call.defvjp(fwd, bwd)
    return call(params, x_BxTxD, consts)
