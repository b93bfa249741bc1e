"""Run metrics: metrics.jsonl, TensorBoard events, the console progress line, FLOPs and MFU."""

from __future__ import annotations

import functools
import json
import re
import time
from pathlib import Path
from typing import Any

import jax
import numpy as np
from absl import logging

from physics_lm.config import ModelConfig

# Dense bf16 peak FLOP/s per device, for MFU. Unknown kinds (e.g. CPUs) report MFU as n/a.
PEAK_FLOPS = {
    "H100": 989e12, "H200": 989e12, "A100": 312e12, "L4": 121e12,
    "TPU v4": 275e12, "TPU v5 lite": 197e12, "TPU v5e": 197e12, "TPU v5p": 459e12,
    "TPU v6 lite": 918e12, "TPU v6e": 918e12,
    "TPU v5": 459e12,  # v5p reports its kind as "TPU v5": after "TPU v5 lite", matched first
}


def peak_flops_per_device(override: float = 0.0) -> float | None:
    if override > 0:
        return override
    return peak_flops_of_kind(jax.devices()[0].device_kind)


def peak_flops_of_kind(kind: str) -> float | None:
    """The first PEAK_FLOPS name contained in a `device_kind`; None if unknown."""
    for name, flops in PEAK_FLOPS.items():
        if name.lower() in kind.lower():
            return flops
    return None


def count_params(params: Any) -> int:
    return int(sum(x.size for x in jax.tree.leaves(params)))


def train_flops_per_token(cfg: ModelConfig, seq_len: int) -> float:
    """6 x matmul params + causal attention (PaLM appendix B convention), forward + backward."""
    d, L, f = cfg.d_model, cfg.num_layers, cfg.mlp_dim
    matmul = L * (4 * d * d + 2 * d * f) + d * cfg.vocab_size
    attention = 12 * L * d * seq_len / 2 if cfg.pos not in ("uniform",) else 0.0
    return 6.0 * matmul + attention


def truncate_after(path: Path, step: int) -> int:
    """Drops the lines of `path` logged after `step`; returns how many. Atomic (temp + rename).

    A run killed after step s resumes from its last checkpoint c <= s and replays c+1..s; without
    this the file would hold those steps twice.
    """
    if not path.exists():
        return 0
    lines = path.read_text().splitlines(keepends=True)
    keep = []
    for line in lines:
        try:
            logged = json.loads(line)["step"]
        except (ValueError, KeyError, TypeError):  # a line cut by the crash
            continue
        if logged <= step:
            keep.append(line if line.endswith("\n") else line + "\n")
    if len(keep) != len(lines):
        tmp = path.with_suffix(".jsonl.tmp")
        tmp.write_text("".join(keep))
        tmp.replace(path)
    return len(lines) - len(keep)


def json_safe(x: Any) -> Any:
    """NaN/inf (e.g. an entropy over zero valid generations) -> null; numpy scalars -> Python."""
    if isinstance(x, dict):
        return {k: json_safe(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [json_safe(v) for v in x]
    if isinstance(x, np.generic):
        x = x.item()
    if isinstance(x, float) and not np.isfinite(x):
        return None
    return x


_TB_INVALID = re.compile(r"[^-/\w.]")


@functools.lru_cache(maxsize=4096)
def tensorboard_tag(name: str) -> str:
    r"""A metric name as a TensorBoard tag: the renaming tensorboardX would do (every character
    outside `[-/\w.]` -> "_", e.g. `eval/cells/seen:op<=4/accuracy` -> `.../seen_op__4/...`),
    done here so it does not log one INFO line per renamed scalar at every eval (~130 lines)."""
    return _TB_INVALID.sub("_", name).lstrip("/")


class MetricsWriter:
    """Appends JSON lines and TensorBoard scalars (only on process 0).

    `start_step`: the step the run (re)starts from; lines logged after it by an earlier launch
    are dropped, so a reader sees each step once.
    """

    def __init__(self, workdir: str | Path, start_step: int = 0) -> None:
        self._active = jax.process_index() == 0
        self._path = Path(workdir) / "metrics.jsonl"
        if self._active:
            dropped = truncate_after(self._path, start_step)
            if dropped:
                logging.info("metrics.jsonl: dropped %d lines logged after step %d (replayed)",
                             dropped, start_step)
        self._tb = None
        if self._active:
            try:
                from tensorboardX import SummaryWriter
                # purge_step hides the events an earlier launch logged after start_step.
                self._tb = SummaryWriter(str(Path(workdir) / "tb"),
                                         purge_step=start_step + 1 if start_step else None)
            except ImportError:  # TensorBoard is optional; JSON lines are the record
                logging.warning("tensorboardX missing: no TensorBoard events")

    def write(self, step: int, scalars: dict[str, float]) -> None:
        if not self._active:
            return
        with self._path.open("a") as f:
            # strict JSON: an undefined metric (a mean over no samples) is null, not NaN
            f.write(json.dumps(json_safe({"step": step, **scalars}), allow_nan=False) + "\n")
        if self._tb is not None:
            for k, v in scalars.items():
                if isinstance(v, int | float) and np.isfinite(v):
                    self._tb.add_scalar(tensorboard_tag(k), v, step)

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()


class Throughput:
    """Tokens/s, MFU and ETA over the steps completed since the last report."""

    def __init__(self, tokens_per_step: int, flops_per_step: float, peak_total: float | None,
                 num_steps: int) -> None:
        self.tokens_per_step, self.flops_per_step = tokens_per_step, flops_per_step
        self.peak_total, self.num_steps = peak_total, num_steps
        self._t, self._step = time.perf_counter(), None

    def reset(self, step: int) -> None:
        self._t, self._step = time.perf_counter(), step

    def report(self, step: int) -> dict[str, float]:
        now = time.perf_counter()
        steps = step - (self._step if self._step is not None else step)
        dt = now - self._t
        self._t, self._step = now, step
        if steps <= 0 or dt <= 0:
            return {}
        out = {"step_time_s": dt / steps, "tokens_per_s": self.tokens_per_step * steps / dt,
               "eta_s": (self.num_steps - step) * dt / steps}
        if self.peak_total:
            out["mfu"] = self.flops_per_step * steps / dt / self.peak_total
        return out


def progress_line(step: int, num_steps: int, scalars: dict[str, float]) -> str:
    mfu = f"{scalars['mfu']:.1%}" if "mfu" in scalars else "n/a"
    eta = scalars.get("eta_s")
    eta_s = f"{int(eta // 3600)}h{int(eta % 3600 // 60):02d}m{int(eta % 60):02d}s" if eta else "-"
    return (f"step {step}/{num_steps} loss {scalars.get('loss', float('nan')):.4f} "
            f"tok/s {scalars.get('tokens_per_s', 0):,.0f} MFU {mfu} ETA {eta_s}")
