"""AdamW with warmup + decay, global-norm clipping and decay only on weight matrices."""

from __future__ import annotations

import jax
import optax

from physics_lm.config import OptimConfig


def lr_schedule(o: OptimConfig, num_steps: int) -> optax.Schedule:
    """Linear warmup 0 -> lr, then cosine/linear decay to `final_lr_frac * lr` at num_steps."""
    final = o.lr * o.final_lr_frac
    decay_steps = max(num_steps - o.warmup_steps, 1)
    if o.schedule == "cosine":
        decay = optax.cosine_decay_schedule(o.lr, decay_steps, alpha=o.final_lr_frac)
    elif o.schedule == "linear":
        decay = optax.linear_schedule(o.lr, final, decay_steps)
    else:
        decay = optax.constant_schedule(o.lr)
    if o.warmup_steps == 0:
        return decay
    warmup = optax.linear_schedule(0.0, o.lr, o.warmup_steps)
    return optax.join_schedules([warmup, decay], [o.warmup_steps])


def decay_mask(params) -> object:
    """True only for Dense kernels: no decay on norms, biases, embeddings or position tables."""
    def is_kernel(path, _leaf) -> bool:
        last = path[-1]
        return getattr(last, "key", getattr(last, "name", None)) == "kernel"
    return jax.tree_util.tree_map_with_path(is_kernel, params)


def make_optimizer(o: OptimConfig, num_steps: int) -> optax.GradientTransformation:
    parts = [optax.clip_by_global_norm(o.grad_clip)] if o.grad_clip > 0 else []
    parts.append(optax.adamw(lr_schedule(o, num_steps), b1=o.b1, b2=o.b2, eps=o.eps,
                             weight_decay=o.weight_decay, mask=decay_mask))
    return optax.chain(*parts)
