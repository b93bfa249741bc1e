"""Quick start: a small GPT-2 (rotary) learns the cfg3b grammar on a laptop CPU in minutes.

  python -m physics_lm.main --config=configs/quickstart.py --workdir=/tmp/quickstart

Held-out loss falls from log(6)≈1.8 (uniform over the vocabulary) far below log(3)≈1.10
(uniform over the 3 terminals) towards the grammar's true entropy (≈0.43 nats/token).
`:steps=N` shortens the run (the test runs a short version).
"""

import ml_collections
from physics_lm.configs import common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    steps = int(arg.removeprefix("steps=")) if arg else 500
    c = common.get_config("cfg")
    c.task.update(grammar="cfg3b", seq_len=512, packing="pack", corrupt_frac=0.0,
                  corrupt_rate=0.15)
    c.model = common.model(4, 4, 128, max_len=512,
                           compute_dtype="float32")  # CPUs have no fast bf16 matmul
    c.optim.update(lr=3e-3, warmup_steps=min(50, steps // 4), final_lr_frac=0.1)
    c.train.update(batch_size=8, num_steps=steps, log_every=max(steps // 30, 1),
                   eval_every=max(steps // 4, 1), checkpoint_every=max(steps // 4, 1),
                   keep_checkpoints=2)
    # mode=eval / probe / attention on the trained workdir: sizes that finish in minutes on a CPU.
    c.eval.update(n_generate=64, n_dp=32, n_entropy=32, decode_batch=64, temperatures=(1.0,),
                  control=True)
    c.probe.update(steps=300, batch_size=8, eval_batches=4, num_heads=4, rank=16, log_every=50)
    c.attention.update(n_rows=32, batch_size=8)
    return c
