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
from physics_lm.config import MeshConfig, ModelConfig, OptimConfig, TrainConfig


def get_config(family: str) -> ml_collections.ConfigDict:
    """The shared defaults of a `family` (task.name) run: GPT-2 small, rotary, bf16, AdamW."""
    c = ml_collections.ConfigDict()
    c.mode = "train"
    c.seed = 0
    c.tag = ""  # analysis modes: write to workdir/<mode>-<tag>/ (README: The workdir is the run)
    c.task = ml_collections.ConfigDict({"name": family})
    c.model = model(12, 12, 768, max_len=1024)
    c.optim = section(OptimConfig, lr=3e-4, b1=0.9, b2=0.98, eps=1e-8, weight_decay=0.1,
                      warmup_steps=1000, schedule="cosine", final_lr_frac=0.0, grad_clip=1.0,
                      grad_accum=1)
    c.train = section(TrainConfig, batch_size=96, num_steps=100_000, log_every=100,
                      eval_every=2000, eval_batches=4, checkpoint_every=2000, keep_checkpoints=3)
    c.mesh = section(MeshConfig, data=-1, fsdp=1, tensor=1, distributed=False)
    for mode in modes.ANALYSIS_MODES:
        handler = modes.family_handler(mode, family)
        if handler is not None:
            c[mode] = ml_collections.ConfigDict(dataclasses.asdict(handler.settings()))
    return c


def section(cls: type, **values) -> ml_collections.ConfigDict:
    """Every field of the dataclass `cls` at its default, with `values` on top: a key added to
    the dataclass is overridable from the command line without an edit here."""
    unknown = set(values) - {f.name for f in dataclasses.fields(cls)}
    if unknown:
        raise ValueError(f"configs/common.py {cls.__name__}: unknown keys {sorted(unknown)}")
    return ml_collections.ConfigDict({**dataclasses.asdict(cls()), **values})


def model(layers: int, heads: int, width: int, *, max_len: int, **kw) -> ml_collections.ConfigDict:
    """A GPT-2 section: `layers` blocks of `heads` heads, d_model `width`, rotary by default."""
    return section(ModelConfig, **{**dict(num_layers=layers, num_heads=heads, d_model=width,
                                          max_len=max_len, pos="rotary",
                                          compute_dtype="bfloat16"), **kw})
