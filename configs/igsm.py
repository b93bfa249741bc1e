"""Part 2.1: GPT-2 (rotary) trained on iGSM problems generated inside the jitted step.

  --config=configs/igsm.py                      med, GPT2-20-9 (the paper's depth-20 model)
  --config=configs/igsm.py:preset=hard,model=12-17
  --config=configs/igsm.py:smoke                a tiny CPU run on short problems (tests)
  --config=configs/igsm.py:scaled               the Part 2.1 trends at CPU scale (ops <= 6; >3 h)
  --config=configs/igsm.py:tiny                 ops <= 4, packed rows: a run that fits one session

Arg keys: preset (med | hard), format (pq | qp), model (a GPT2-ℓ-h name of the Part 2.1 grid:
width 64·h, h heads), smoke. Recipes from the paper: med lr 0.002, wd 0.05, batch 512, context
768, 100k steps, 1k warmup, cosine to 0.01×; hard: wd 0.03, batch 256, context 1024, 200k steps.
The held-out loss (train.eval_*) is measured on the task's held-out variant: for iGSM the *test*
template bins (`IGSMTask.heldout()`), so it measures generalisation to unseen solution templates.
"""

import ml_collections
from physics_lm.configs import common

from physics_lm.config import parse_config_arg

GRID = ("4-21", "8-15", "12-12", "16-10", "20-9", "4-30", "8-21", "12-17", "16-15", "20-13")
# grad_accum: GPT2-20-9 fits one 80 GB device (XLA:CPU analysis, benchmarks/step_memory.py: peak
# 33.5 GB on med, 64.5 GB at grad_accum=1; 48.1 GB on hard)
RECIPES = {
    "med": dict(weight_decay=0.05, batch_size=512, seq_len=768, num_steps=100_000, grad_accum=2),
    "hard": dict(weight_decay=0.03, batch_size=256, seq_len=1024, num_steps=200_000, grad_accum=1),
}
TEST_ARGS = (None, "smoke", "scaled", "tiny", "preset=hard,model=12-17", "format=qp,model=4-21")


def cpu_analysis(c: ml_collections.ConfigDict, id_op: int, ood_ops: tuple[int, ...]) -> None:
    """Probe and regret sizes for a CPU-scale run whose training max op is `id_op`."""
    # V-probe: one shared ΔE, 3 queries per task and problem (~40 min here at `scaled`)
    c.probe.update(steps=200, batch_size=8, lr=3e-3, eval_batches=16, queries=3,
                   delta="shared", ood_ops=ood_ops, depth_steps=100, mistakes=64, log_every=25)
    # Part 2.2's regret table: 256 problems of the hardest ID and the first OOD cell
    c.regret.update(n=256, cells=(f"op={id_op}", f"op={ood_ops[0]}"), beams=(1, 4, 16),
                    regret_beams=(1, 4),
                    v1_steps=300, v2_steps=100, batch_size=8, queries=3, decode_batch=64)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    a = parse_config_arg(arg)
    preset = a.get("preset", "med")
    if preset not in RECIPES:
        raise ValueError(f"configs/igsm.py: preset={preset!r}; known: {', '.join(RECIPES)}")
    name = a.get("model", "20-9")
    if name not in GRID:
        raise ValueError(f"configs/igsm.py: model={name!r}; known: {', '.join(GRID)}")
    layers, heads = (int(v) for v in name.split("-"))
    r = RECIPES[preset]
    c = common.get_config("igsm")
    c.task.update(preset=preset, fmt=a.get("format", "pq"), split="train",
                  train_bins=tuple(range(16)), seq_len=r["seq_len"], loss_on="solution",
                  groups=1)  # on a data-parallel mesh: groups = data x fsdp (each device its rows)
    c.model = common.model(layers, heads, 64 * heads, max_len=r["seq_len"], remat=layers >= 12)
    c.optim.update(lr=0.002, weight_decay=r["weight_decay"], final_lr_frac=0.01,
                   grad_accum=r["grad_accum"])
    c.train.update(batch_size=r["batch_size"], num_steps=r["num_steps"])
    if a.get("smoke") == "1":  # short problems, a 2-layer model: learns on a CPU in a minute or two
        c.task.update(preset="custom", max_op=3, max_edge=6, seq_len=320)
        c.model = common.model(2, 2, 64, max_len=320, compute_dtype="float32")
        c.optim.update(lr=5e-3, warmup_steps=10, weight_decay=0.05, grad_accum=1)
        c.train.update(batch_size=16, num_steps=150, log_every=10, eval_every=150,
                       eval_batches=2, checkpoint_every=150)
        c.probe.update(steps=30, batch_size=8, lr=3e-3, eval_batches=1, queries=3,
                       ood_ops=(8,), delta="shared", depth_steps=10, log_every=10)
        c.regret.update(n=8, cells=("op=3",), beams=(1, 2), regret_beams=(1, 2), v1_steps=10,
                        v2_steps=5, batch_size=8, queries=3, decode_batch=8)
    if a.get("scaled") == "1":  # the paper's trends on a CPU: ops <= 6, a 6-layer width-128 model
        c.task.update(preset="custom", max_op=6, max_edge=10, seq_len=464)
        c.model = common.model(6, 4, 128, max_len=464, compute_dtype="float32")
        c.optim.update(lr=2e-3, warmup_steps=100, weight_decay=0.05, grad_accum=1)
        c.train.update(batch_size=32, num_steps=3000, log_every=25, eval_every=250,
                       eval_batches=2, checkpoint_every=250, keep_checkpoints=3)
        cpu_analysis(c, id_op=6, ood_ops=(11, 14))
    if a.get("tiny") == "1":  # ops <= 4, max_edge 6, packed rows, 4 x 128: ~1.6 h on 2 cores
        c.task.update(preset="custom", max_op=4, max_edge=6, seq_len=320, packing="pack")
        c.model = common.model(4, 4, 128, max_len=320, compute_dtype="float32")
        c.optim.update(lr=3e-3, warmup_steps=100, weight_decay=0.05, grad_accum=1)
        c.train.update(batch_size=32, num_steps=3500, log_every=25, eval_every=250,
                       eval_batches=2, checkpoint_every=250, keep_checkpoints=3,
                       analysis_every=500)
        # the learning curve: greedy accuracy on 32 problems of the training law, from the test
        # template bins and (the `seen:` diagnostic) from the training ones
        c.eval.update(n=32, cells=("op<=4", "seen:op<=4"), decode_batch=32)
        cpu_analysis(c, id_op=4, ood_ops=(9,))
    return c


def sweep(add) -> None:
    """The Part 2.1 model grid on med."""
    for name in GRID:
        layers, heads = (int(v) for v in name.split("-"))
        add(**{"config.model.num_layers": layers, "config.model.num_heads": heads,
               "config.model.d_model": 64 * heads})
