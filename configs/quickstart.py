"""Quick start: a small GPT-2 (rotary) learns the cfg3b grammar on a laptop CPU in minutes.

  python -m physics_lm.main --config=configs/quickstart.py --workdir=/tmp/quickstart

Held-out loss falls from log(6)≈1.8 (uniform over the vocabulary) far below log(3)≈1.10
(uniform over the 3 terminals) towards the grammar's true entropy (≈0.43 nats/token).
`:steps=N` shortens the run (the test runs a short version).
"""

import ml_collections


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    steps = int(arg.removeprefix("steps=")) if arg else 500
    c = ml_collections.ConfigDict()
    c.mode = "train"
    c.seed = 0
    c.task = ml_collections.ConfigDict(dict(
        name="cfg", grammar="cfg3b", seq_len=512, packing="pack", corrupt_frac=0.0,
        corrupt_rate=0.15))
    c.model = ml_collections.ConfigDict(dict(
        num_layers=4, num_heads=4, d_model=128, d_mlp=0, vocab_size=0, max_len=512,
        pos="rotary", dropout=0.0, tie_embeddings=True,
        compute_dtype="float32",  # CPUs have no fast bf16 matmul
        remat=False))
    c.optim = ml_collections.ConfigDict(dict(
        lr=3e-3, b1=0.9, b2=0.98, eps=1e-8, weight_decay=0.1, warmup_steps=min(50, steps // 4),
        schedule="cosine", final_lr_frac=0.1, grad_clip=1.0, grad_accum=1))
    c.train = ml_collections.ConfigDict(dict(
        batch_size=8, num_steps=steps, log_every=max(steps // 30, 1),
        eval_every=max(steps // 4, 1), eval_batches=4, checkpoint_every=max(steps // 4, 1),
        keep_checkpoints=2, peak_flops_per_device=0.0))
    c.mesh = ml_collections.ConfigDict(dict(data=-1, fsdp=1, tensor=1, distributed=False))
    # mode=eval / mode=probe on the trained workdir: sizes that finish in minutes on a CPU.
    c.eval = ml_collections.ConfigDict(dict(n_generate=64, n_dp=32, n_entropy=32, decode_batch=64,
                                            temperatures=(1.0,), control=True))
    c.probe = ml_collections.ConfigDict(dict(steps=300, batch_size=8, eval_batches=4,
                                             num_heads=4, rank=16, log_every=50))
    return c
