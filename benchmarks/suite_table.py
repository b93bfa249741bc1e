"""The bookkeeping of `accelerator_suite.py`: sections run under a budget (`Suite`), and its one
table, a line per section with its headline numbers."""

from __future__ import annotations

import json
import time
import traceback
from collections.abc import Callable
from pathlib import Path


def _n(x: float | None, unit: str = "") -> str:
    if x is None:
        return "n/a"
    for div, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= div:
            return f"{x / div:.2f}{suffix}{unit}"
    return f"{x:.3g}{unit}"


def summary(name: str, r: dict) -> str:
    """The headline of one ok section."""
    if name == "device":
        peak = r.get("peak_bf16_flops")
        return (f"{r['card']} ({r['backend']}), driver {r['driver'] or 'n/a'}, jax {r['jax']}, "
                f"MFU vs {r.get('peak_name') or 'no'} bf16 dense peak {_n(peak, 'FLOP/s')}")
    if name.startswith("train_"):
        mfu = "n/a" if r["mfu"] is None else f"{r['mfu']:.1%}"
        back = " FELL BACK to xla" if r["fell_back"] else ""
        calls = r.get("kernel_calls")
        if r["attention"] != "xla" and calls is not None:  # did the requested kernel run?
            back += (f", {calls} kernel calls in the step" if calls
                     else ", NO kernel call in the compiled step")
        how = f" ({r['batch_how']})" if "batch_how" in r else ""
        return (f"batch {r['batch']}{how} x T {r['seq_len']}: {_n(r['tokens_per_s'])} tokens/s,"
                f" step {r['step_s'] * 1e3:.1f} ms, MFU {mfu}, compile {r['compile_s']:.0f}s"
                f"{back}")
    if name == "sampler_share":
        return " · ".join(f"{k} {v['share']:.1%} of the step ({v['sampler']} at {v['batch']})"
                          if "share" in v else f"{k}: {v['error']}" for k, v in r.items()
                          if isinstance(v, dict))
    if name == "samplers":
        return " · ".join(f"{k} {_n(v['per_s'])}/s" for k, v in r.items()
                          if isinstance(v, dict))
    if name.startswith("decode_"):
        return (f"batch {r['batch']}, prompt {r['prompt']} + {r['new_tokens']} new: "
                f"{_n(r['tokens_per_s'])} tokens/s ({r['attention']})")
    if name == "membership":
        return f"{_n(r['checks_per_s'])} checks/s at batch {r['batch']}"
    if name == "projection":
        return " · ".join(f"{k} {v['hours']:.2f} h" if "hours" in v else f"{k}: {v['error']}"
                          for k, v in r.items() if isinstance(v, dict))
    if name == "max_batch":
        return " · ".join(f"{x['case']}/{x['policy']}/{x['attention']} "
                          + "/".join(f"{b}@{g}GB" for g, b in x["max_batch"].items())
                          for x in r["rows"])
    return ""


def print_table(results: dict[str, dict]) -> None:
    width = max(len(k) for k in results)
    print(f"\n{'section':<{width}}  {'status':<7} {'s':>5}  result")
    for name, r in results.items():
        if r["status"] == "ok":
            text = summary(name, r)
        elif r["status"] == "error":
            text = r["error"].splitlines()[0][:120]
        else:
            text = r["reason"]
        print(f"{name:<{width}}  {r['status']:<7} {r.get('seconds', 0):>5.0f}  {text}")


class Suite:
    """Runs sections under a budget; records ok / error / skipped; rewrites the JSON each time."""

    def __init__(self, out: Path, budget_s: float, only: tuple[str, ...] = ()) -> None:
        self.out, self.budget_s, self.t0 = out, budget_s, time.perf_counter()
        self.only = only
        self.results: dict[str, dict] = {}

    def left(self) -> float:
        return self.budget_s - (time.perf_counter() - self.t0)

    def run(self, name: str, fn: Callable[[], dict], always: bool = False) -> dict | None:
        if self.only and not name.startswith(self.only):
            self.results[name] = {"status": "skipped", "reason": "not in --only"}
        elif self.left() <= 0 and not always:
            self.results[name] = {"status": "skipped", "reason": f"budget {self.budget_s:g}s spent"}
        else:
            t = time.perf_counter()
            try:
                self.results[name] = {"status": "ok", **fn()}
            except Exception as e:  # recorded; the next section still runs
                self.results[name] = {"status": "error",
                                      "error": f"{type(e).__name__}: {e}"[:2000],
                                      "traceback": traceback.format_exc()[-3000:]}
            self.results[name]["seconds"] = time.perf_counter() - t
        print(f"[{time.perf_counter() - self.t0:6.0f}s] {name}: {self.results[name]['status']}",
              flush=True)
        self.out.write_text(json.dumps(self.results, indent=1, default=str))
        return self.results[name] if self.results[name]["status"] == "ok" else None
