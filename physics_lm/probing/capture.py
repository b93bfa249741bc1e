"""Named activations of a frozen model, stacked for probing.

The model returns activations at stable names (`GPT2.__call__(capture=...)`), so probes never
patch it. Parameters go through `stop_gradient`: whatever a probe step differentiates, no
gradient can reach the model, and the caller never receives model parameters back.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp

from physics_lm.models.gpt2 import GPT2, activation_names


def residual_layer_names(num_layers: int) -> tuple[str, ...]:
    """Every [B, T, D] hidden state in forward order: embed, each block's output, final.

    `final` is the last block's output after `ln_f`, the state the LM head reads; the attention
    patterns are [B, H, T, S] and are not probe inputs.
    """
    return tuple(n for n in activation_names(num_layers) if not n.endswith(".attn.pattern"))


def capture_fn(model: GPT2, names: Sequence[str]
               ) -> Callable[[Any, jax.Array], dict[str, jax.Array]]:
    """A pure `(model_params, tokens_BxT) -> {name: float32[B, T, D]}` (inlines into a jit).

    Args:
      model: the GPT2 module (deterministic forward, no dropout).
      names: activation names to return (`residual_layer_names`).

    The returned function takes an optional `edit(frozen_params) -> params`, applied *after*
    the stop-gradient: the seam for probes that change the model (the iGSM V-probe adds a
    rank-r delta to the input embedding), whose own parameters then get the only gradients.
    """
    names = tuple(names)

    def run(model_params: Any, tokens_BxT: jax.Array,
            edit: Callable[[Any], Any] | None = None) -> dict[str, jax.Array]:
        frozen = jax.lax.stop_gradient(model_params)
        if edit is not None:
            frozen = edit(frozen)
        _, acts = model.apply({"params": frozen}, tokens_BxT, capture=names, deterministic=True)
        return {n: acts[n].astype(jnp.float32) for n in names}

    return run


def stacked_fn(model: GPT2, names: Sequence[str]
               ) -> Callable[[Any, jax.Array], jax.Array]:
    """A pure `(model_params, tokens_BxT, edit=None) -> float32[N, B, T, D]` (`names` order)."""
    run = capture_fn(model, names)

    def stacked(params: Any, tokens_BxT: jax.Array,
                edit: Callable[[Any], Any] | None = None) -> jax.Array:
        return jnp.stack(list(run(params, tokens_BxT, edit).values()))

    return stacked


def capture(model: GPT2, params: Any, tokens_BxT: jax.Array, names: Sequence[str]
            ) -> dict[str, jax.Array]:
    """Jitted one-off capture (host-side inspection, notebooks)."""
    return jax.jit(capture_fn(model, names))(params, tokens_BxT)
