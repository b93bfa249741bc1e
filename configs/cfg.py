"""Part 1: GPT-2 on a synthetic CFG (big_vision style).

  --config=configs/cfg.py                          the paper's recipe: cfg3f, GPT-2 small, rotary
  --config=configs/cfg.py:grammar=cfg3b,pos=relative,size=small
  --config=configs/cfg.py:smoke                    a tiny CPU-sized run (tests and laptops)

Arg keys: grammar (cfg3b/i/h/g/f/e1/e2/j/k), pos (absolute/relative/rotary/position_only/uniform),
size (small = 12-12-768; tiny; smoke), corrupt (fraction of perturbed training strings), smoke.
The paper's recipe: context 512, batch 96, 100k steps, AdamW lr 3e-4 (β 0.9/0.98), wd 0.1,
linear decay.
"""

import ml_collections
from physics_lm.configs import common

from physics_lm.config import parse_config_arg

SIZES = {  # (layers, heads, d_model)
    "small": (12, 12, 768),
    "medium": (24, 16, 1024),
    "tiny": (4, 4, 128),
    "smoke": (2, 2, 32),
}
GRAMMARS = ("cfg3b", "cfg3i", "cfg3h", "cfg3g", "cfg3f", "cfg3e1", "cfg3e2", "cfg3j", "cfg3k")
POSITIONS = ("absolute", "relative", "rotary", "position_only", "uniform")
# Every Part 1 variant at its smoke size, plus the full recipe (validated by tests/test_config.py).
TEST_ARGS = (None, "corrupt=0.1", *(f"grammar={g},pos={p},smoke" for g in GRAMMARS[:5]
                                    for p in POSITIONS))


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    a = parse_config_arg(arg)
    smoke = a.get("smoke") == "1" or a.get("size") == "smoke"
    layers, heads, width = SIZES[a.get("size", "smoke" if smoke else "small")]
    c = common.get_config("cfg")
    c.task.update(grammar=a.get("grammar", "cfg3f"), seq_len=64 if smoke else 512,
                  packing="pack", corrupt_frac=float(a.get("corrupt", 0.0)), corrupt_rate=0.15)
    c.model = common.model(layers, heads, width, max_len=64 if smoke else 1024,
                           pos=a.get("pos", "rotary"),
                           compute_dtype="float32" if smoke else "bfloat16")
    c.optim.update(schedule="linear", warmup_steps=2 if smoke else 1000,
                   grad_accum=1 if smoke else 2)  # batch 96 of GPT-2 small in 80 GB (step_memory)
    c.train.update(eval_batches=8)
    c.eval.update(n_generate=256, n_dp=64, n_entropy=64, decode_batch=128, control=True)
    c.probe.update(steps=2000, batch_size=32, eval_batches=8)
    c.attention.update(n_rows=64, batch_size=8)
    if smoke:
        c.train.update(batch_size=8, num_steps=4, log_every=1, eval_every=4, eval_batches=1,
                       checkpoint_every=2, keep_checkpoints=2)
        c.eval.update(n_generate=16, n_dp=8, n_entropy=8, decode_batch=16)
        c.probe.update(steps=20, batch_size=8, eval_batches=2)
        c.attention.update(n_rows=8, batch_size=8)
    return c


def sweep(add) -> None:
    """The Part 1 grid: five grammars x five position schemes (GPT-2 small)."""
    for grammar in ("cfg3b", "cfg3i", "cfg3h", "cfg3g", "cfg3f"):
        for pos in POSITIONS:
            add(**{"config.task.grammar": grammar, "config.model.pos": pos})
