"""Part 2.2: pretraining on retry data (iGSM solutions with "Define <X> as BACK." mistakes).

  --config=configs/igsm_retry.py                  med, retry at rate 0.2, no mask, packed rows
  --config=configs/igsm_retry.py:preset=hard,format=qp,retry=retry_weak,rate=0.5
  --config=configs/igsm_retry.py:smoke            a tiny CPU run (short problems, rate 0.5)
  --config=configs/igsm_retry.py:scaled,rate=0.2  Part 2.2 at CPU scale: configs/igsm.py:scaled's
                                                  problems and model, packed rows (retry=none is
                                                  the error-free run at the same token budget)
  --config=configs/igsm_retry.py:tiny,rate=0.5    the same on configs/igsm.py:tiny (one session)

Arg keys: preset (med | hard), format (pq | qp), model (a GPT2-ℓ-h name of configs/igsm.py's grid;
default 12-12), retry (none | retry | retry_weak | retry_miss), rate (retry_rate), mask (none |
mistake | prefix: no loss on the wrong parameter's name, the official `mask_label`, or on the whole
"Define <X> as", `mask_label2`), packing (pack | single), smoke, scaled, tiny. The Part 2.1 recipe
of the preset (configs/igsm.py); rows are packed (problems one after another in the context, one
that does not fit is dropped), so runs with different retry rates train on the same number of
tokens and longer retry solutions mean fewer problems (`IGSMTask.packing`). Evaluation cells are
plain problems (data/igsm/cells.py), so a retry model is scored like any other.

`sweep(add)`: the paper's grid for the arg's preset and format -- retry_rate {0.05, 0.1, 0.2, 0.5}
x {no mask, mask} for retry, the same rates for retry_weak and retry_miss, and the error-free
baseline (17 runs). The four preset x format grids (P in med, hard; F in pq, qp):

  python launch/sweep.py --config=configs/igsm_retry.py:preset=P,format=F --root=runs/retry_P_F
"""

import ml_collections
from physics_lm.configs import igsm

from physics_lm.config import parse_config_arg

RATES = (0.05, 0.1, 0.2, 0.5)
KINDS = ("none", "retry", "retry_weak", "retry_miss")
TEST_ARGS = (None, "smoke", "scaled,rate=0.5,mask=mistake", "scaled,retry=none", "tiny,rate=0.5",
             "preset=med,format=qp", "preset=hard,format=pq",
             "preset=hard,format=qp,retry=retry_miss,rate=0.05,mask=none,packing=single")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    a = parse_config_arg(arg)
    base = {k: a[k] for k in ("preset", "format", "smoke", "scaled", "tiny") if k in a}
    base.setdefault("model", a.get("model", "12-12"))
    c = igsm.get_config(",".join(f"{k}={v}" for k, v in base.items()))
    retry = a.get("retry", "retry")
    if retry not in KINDS:
        raise ValueError(f"configs/igsm_retry.py: retry={retry!r}; known: {', '.join(KINDS)}")
    rate = float(a.get("rate", "0.5" if "smoke" in a else "0.2")) if retry != "none" else 0.0
    c.task.update(retry=retry, retry_rate=rate,
                  retry_mask=a.get("mask", "none") if retry != "none" else "none",
                  packing=a.get("packing", "pack"))
    return c


def sweep(add) -> None:
    """The Part 2.2 retry grid (module docstring) for the config's preset and format."""
    def run(retry: str, rate: float, mask: str = "none") -> None:
        add(**{"config.task.retry": retry, "config.task.retry_rate": rate,
               "config.task.retry_mask": mask})

    run("none", 0.0)
    for rate in RATES:
        for mask in ("none", "mistake"):
            run("retry", rate, mask)
    for kind in ("retry_weak", "retry_miss"):
        for rate in RATES:
            run(kind, rate)
