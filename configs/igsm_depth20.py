"""The headline run: GPT2-20-9 (20 layers, 9 heads, width 576, rotary) on iGSM-med.

  python -m physics_lm.main --config=configs/igsm_depth20.py --workdir=runs/igsm_depth20

The paper's med recipe (lr 0.002, wd 0.05, batch 512, context 768, 100k steps, 1k warmup,
cosine to 0.01x), problems generated on the fly inside the jitted training step.
"""

import importlib.util
from pathlib import Path

import ml_collections

_spec = importlib.util.spec_from_file_location("igsm_family", Path(__file__).with_name("igsm.py"))
_family = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_family)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    extra = f",{arg}" if arg else ""
    return _family.get_config(f"preset=med,model=20-9{extra}")
