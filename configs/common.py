"""What every experiment family shares (big_vision's `common.py`): each config file starts from
`get_config(family)` and states only what differs.

Every section holds every key (the analysis sections too, from the family's settings in
physics_lm/modes.py), so any value can be overridden from the command line:
`--config.optim.lr=1e-3`, `--config.eval.n_generate=512`.
"""

from __future__ import annotations

import dataclasses

import ml_collections

from physics_lm import modes


def get_config(family: str) -> ml_collections.ConfigDict:
    """The shared defaults of a `family` (task.name) run: GPT-2 small, rotary, bf16, AdamW."""
    c = ml_collections.ConfigDict()
    c.mode = "train"
    c.seed = 0
    c.tag = ""  # analysis modes: write to workdir/<mode>-<tag>/ (README: The workdir is the run)
    c.task = ml_collections.ConfigDict({"name": family})
    c.model = model(12, 12, 768, max_len=1024)
    c.optim = ml_collections.ConfigDict(dict(
        lr=3e-4, b1=0.9, b2=0.98, eps=1e-8, weight_decay=0.1, warmup_steps=1000,
        schedule="cosine", final_lr_frac=0.0, grad_clip=1.0, grad_accum=1))
    c.train = ml_collections.ConfigDict(dict(
        batch_size=96, num_steps=100_000, log_every=100, eval_every=2000, eval_batches=4,
        checkpoint_every=2000, keep_checkpoints=3, peak_flops_per_device=0.0,
        device_memory_bytes=0, init_from="", lora_rank=0, lora_embed_rank=-1,
        analysis_every=0))
    c.mesh = ml_collections.ConfigDict(dict(data=-1, fsdp=1, tensor=1, distributed=False))
    for mode in modes.ANALYSIS_MODES:
        handler = modes.family_handler(mode, family)
        if handler is not None:
            c[mode] = ml_collections.ConfigDict(dataclasses.asdict(handler.settings()))
    return c


def model(layers: int, heads: int, width: int, *, max_len: int, **kw) -> ml_collections.ConfigDict:
    """A GPT-2 section: `layers` blocks of `heads` heads, d_model `width`, rotary by default."""
    m = dict(num_layers=layers, num_heads=heads, d_model=width, d_mlp=0, vocab_size=0,
             max_len=max_len, pos="rotary", rel_max_distance=128, rope_base=10_000.0,
             dropout=0.0, tie_embeddings=True, compute_dtype="bfloat16", remat=False,
             remat_policy="", attention="xla", attention_fallback="warn")
    unknown = set(kw) - set(m)
    if unknown:
        raise ValueError(f"configs/common.py model(): unknown keys {sorted(unknown)}")
    return ml_collections.ConfigDict({**m, **kw})
