"""Pure train/eval steps. The batch is sampled *inside* the step from (seed, step).

`make_train_step` returns a function `state -> (state, metrics)` to be jitted with explicit
shardings by the trainer: key = fold_in(data_key, state.step), batch = task.sample(key, B),
constrained to the data axes, split into `grad_accum` micro-batches, summed gradients. A LoRA
step is `(state, base) -> (state, metrics)`: state.params are the adapters, the model runs with
`lora.merge(base, adapters)`, so only the adapters get gradients and `base` is never updated.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import optax

from physics_lm.data.batch import Batch, Task
from physics_lm.models import lora
from physics_lm.models.gpt2 import GPT2

# Key streams derived from the config seed; a stream index never changes meaning.
# 10-12 belong to probing (physics_lm/probing/train_probe.py: probe data, probe eval, probe init).
STREAM_TRAIN_DATA, STREAM_INIT, STREAM_EVAL_DATA, STREAM_DROPOUT, STREAM_LORA = 0, 1, 2, 3, 4


def stream_key(seed: int, stream: int) -> jax.Array:
    return jax.random.fold_in(jax.random.key(seed), stream)


@flax.struct.dataclass
class TrainState:
    step: jax.Array  # int32 scalar: number of updates applied
    params: Any
    opt_state: Any


def token_losses(model: GPT2, params: Any, batch: Batch, *, dropout_key: jax.Array | None = None):
    """Summed next-token NLL over the loss mask, and the number of weighed tokens."""
    rngs = {"dropout": dropout_key} if dropout_key is not None else {}
    logits_BxTxV, _ = model.apply({"params": params}, batch.tokens,
                                  deterministic=dropout_key is None, rngs=rngs)
    nll_BxT1 = optax.softmax_cross_entropy_with_integer_labels(logits_BxTxV[:, :-1],
                                                                batch.tokens[:, 1:])
    w_BxT1 = batch.loss_mask[:, :-1].astype(jnp.float32)
    return jnp.sum(nll_BxT1 * w_BxT1), jnp.sum(w_BxT1)


def _split_micro(batch: Batch, n: int) -> Batch:
    return jax.tree.map(lambda x: x.reshape(n, x.shape[0] // n, *x.shape[1:]), batch)


def make_train_step(model: GPT2, task: Task, tx: optax.GradientTransformation, *,
                    seed: int, batch_size: int, grad_accum: int, dropout: bool,
                    batch_constraint: Callable[[Any], Any] = lambda b: b):
    def train_step(state: TrainState, *frozen: Any) -> tuple[TrainState, dict[str, jax.Array]]:
        # Keys are derived while tracing (constants to XLA), not eagerly when the step is built:
        # building it then needs no device, so it also compiles for compile-only TPU devices.
        data_key = stream_key(seed, STREAM_TRAIN_DATA)
        drop_key = stream_key(seed, STREAM_DROPOUT)

        def grads_of(params, micro: Batch, key):
            def loss(p):
                full = lora.merge(frozen[0], p) if frozen else p
                return token_losses(model, full, micro, dropout_key=key if dropout else None)
            (s, n), g = jax.value_and_grad(loss, has_aux=True)(params)
            return s, n, g

        step_data_key = jax.random.fold_in(data_key, state.step)
        batch = batch_constraint(task.sample(step_data_key, batch_size))
        step_drop_key = jax.random.fold_in(drop_key, state.step)
        if grad_accum == 1:
            loss_sum, count, grads = grads_of(state.params, batch, step_drop_key)
        else:
            micro = _split_micro(batch, grad_accum)

            def body(carry, i):
                mb = batch_constraint(jax.tree.map(lambda x: x[i], micro))
                s, n, g = grads_of(state.params, mb, jax.random.fold_in(step_drop_key, i))
                acc_s, acc_n, acc_g = carry
                return (acc_s + s, acc_n + n, jax.tree.map(jnp.add, acc_g, g)), None

            zeros = jax.tree.map(jnp.zeros_like, state.params)
            (loss_sum, count, grads), _ = jax.lax.scan(
                body, (jnp.zeros(()), jnp.zeros(()), zeros), jnp.arange(grad_accum))
        # Gradient of the mean loss over every weighed token of the global batch.
        denom = jnp.maximum(count, 1.0)
        grads = jax.tree.map(lambda g: g / denom, grads)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        metrics = {"loss": loss_sum / denom, "grad_norm": optax.tree.norm(grads),
                   "tokens": count, **task.batch_metrics(batch)}
        return TrainState(state.step + 1, params, opt_state), metrics

    return train_step


def make_eval_step(model: GPT2, task: Task, *, seed: int, batch_size: int,
                   batch_constraint: Callable[[Any], Any] = lambda b: b):
    """`(params, i) -> (loss_sum, count)` on held-out batch i (a key stream training never uses)."""
    def eval_step(params, i):
        eval_key = stream_key(seed, STREAM_EVAL_DATA)
        batch = batch_constraint(task.sample(jax.random.fold_in(eval_key, i), batch_size))
        return token_losses(model, params, batch)

    return eval_step


def init_params(model: GPT2, seq_len: int, seed: int):
    """Boxed (logically partitioned) initial params: the run's random init, from (seed, init)."""
    return model.init(stream_key(seed, STREAM_INIT), jnp.zeros((1, seq_len), jnp.int32))["params"]


def init_state(model: GPT2, tx: optax.GradientTransformation, seq_len: int, seed: int):
    """Boxed (logically partitioned) initial state; unbox after computing shardings."""
    params = init_params(model, seq_len, seed)
    return TrainState(jnp.zeros((), jnp.int32), params, tx.init(nn.unbox(params)))
