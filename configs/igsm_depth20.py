"""The headline run: GPT2-20-9 (20 layers, 9 heads, width 576, rotary) on iGSM-med.

  python -m physics_lm.main --config=configs/igsm_depth20.py --workdir=runs/igsm_depth20

The paper's med recipe (lr 0.002, wd 0.05, batch 512, context 768, 100k steps, 1k warmup,
cosine to 0.01x), problems generated on the fly inside the jitted training step.
"""

import ml_collections
from physics_lm.configs import igsm


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    return igsm.get_config(f"preset=med,model=20-9{',' + arg if arg else ''}")
