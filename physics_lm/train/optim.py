"""AdamW with warmup + decay, global-norm clipping and decay only on weight matrices."""

from __future__ import annotations

import jax
import optax

from physics_lm.config import OptimConfig, wsd_decay_start


def lr_schedule(o: OptimConfig, num_steps: int) -> optax.Schedule:
    """Linear warmup 0 -> lr, then down to `final_lr_frac * lr` at num_steps.

    "cosine" / "linear" decay over everything after the warmup; "constant" never decays; "wsd"
    (warmup-stable-decay) holds lr until `wsd_decay_start` and decays linearly over the last
    `decay_frac` of the run. With "wsd" (or "constant") a longer run with the same settings has
    the same lr as a shorter one up to the shorter one's decay, so a fork from a checkpoint of
    the stable phase (`train.init_from_state`) continues it exactly (README: extending a run).
    """
    final = o.lr * o.final_lr_frac
    decay_steps = max(num_steps - o.warmup_steps, 1)
    if o.schedule == "cosine":
        decay = optax.cosine_decay_schedule(o.lr, decay_steps, alpha=o.final_lr_frac)
    elif o.schedule == "linear":
        decay = optax.linear_schedule(o.lr, final, decay_steps)
    elif o.schedule == "wsd":
        start = wsd_decay_start(o, num_steps)
        decay = optax.join_schedules(
            [optax.constant_schedule(o.lr),
             optax.linear_schedule(o.lr, final, max(num_steps - start, 1))],
            [start - o.warmup_steps])
    else:
        decay = optax.constant_schedule(o.lr)
    if o.warmup_steps == 0:
        return decay
    warmup = optax.linear_schedule(0.0, o.lr, o.warmup_steps)
    return optax.join_schedules([warmup, decay], [o.warmup_steps])


def is_decayed(path: tuple) -> bool:
    """Whether the parameter at `path` (a tree path of the params) gets weight decay.

    Decay is for the weight matrices of projections: every Dense kernel (`kernel`: MLP, untied
    `lm_head`) and the attention's fused `qkv_kernel` / `out_kernel`. Norm scales and biases,
    the token embedding `wte`, position tables (`wpe`) and relative-position biases (`rel_bias`)
    are not decayed: they are offsets, gains or lookup tables, and decay would pull rows of rare
    tokens or far positions to zero for lack of gradient. The papers state only the AdamW decay
    value (e.g. 0.1 for Part 1, 0.05 on iGSM-med); their GPT-2 code base (HF-style grouping:
    no decay on biases and LayerNorm) would also decay `wte`, which, tied, is the output
    projection too. We keep the tied embedding undecayed: it is first a lookup table.
    """
    name = getattr(path[-1], "key", getattr(path[-1], "name", None))
    return isinstance(name, str) and (name == "kernel" or name.endswith("_kernel"))


def decay_mask(params) -> object:
    """A tree of bools like `params`: True where `is_decayed`."""
    return jax.tree_util.tree_map_with_path(lambda path, _: is_decayed(path), params)


def make_optimizer(o: OptimConfig, num_steps: int, *, decay_all: bool = False
                   ) -> optax.GradientTransformation:
    """`decay_all`: weight decay on every parameter (LoRA adapters), else `decay_mask`."""
    parts = [optax.clip_by_global_norm(o.grad_clip)] if o.grad_clip > 0 else []
    parts.append(optax.adamw(lr_schedule(o, num_steps), b1=o.b1, b2=o.b2, eps=o.eps,
                             weight_decay=o.weight_decay, mask=None if decay_all else decay_mask))
    return optax.chain(*parts)
