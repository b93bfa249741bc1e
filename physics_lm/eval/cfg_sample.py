"""`mode=sample` for CFG runs: generations written one JSON object a line, with their verdicts.

The `sample` config section (`SampleConfig`; all optional, validated at config load): n=64,
temperature=1.0, top_k=0, prefix_len=0 (tokens of a fresh true string given after BOS),
decode_batch=128, max_total_len=0 (0 = model.max_len), seed=0, step=-1 (latest).

Writes workdir/sample/cfg_step{S}_cut{K}_T{t}.jsonl, one object a line: tokens (prefix +
completion, no BOS/EOS), prefix_len, eos, valid (membership by the CYK), logprob_model (sum of
log q of the sampled tokens); workdir/sample/cfg.json holds the summary of the last call.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import numpy as np

from physics_lm.config import ConfigError
from physics_lm.data.cfg import membership
from physics_lm.eval.cfg_eval import EvalConfig, sample_from_prefixes, tkey, true_strings
from physics_lm.modes import Handler


@dataclasses.dataclass(frozen=True)
class SampleConfig:
    """The `sample` section (module docstring)."""

    n: int = 64
    temperature: float = 1.0
    top_k: int = 0
    prefix_len: int = 0
    decode_batch: int = 128
    max_total_len: int = 0
    seed: int = 0
    step: int = -1

    def __post_init__(self) -> None:
        if min(self.n, self.decode_batch) < 1:
            raise ConfigError(f"sample.n/decode_batch={(self.n, self.decode_batch)!r}: "
                              "must be >= 1")
        if min(self.temperature, self.top_k, self.prefix_len, self.max_total_len) < 0:
            raise ConfigError(f"sample.temperature/top_k/prefix_len/max_total_len="
                              f"{(self.temperature, self.top_k, self.prefix_len)!r}: must be >= 0")


def _run(loaded: Any, sc: SampleConfig) -> dict[str, Any]:
    exp = loaded.exp
    g = exp.task.spec
    key = jax.random.key(sc.seed)
    prefixes = [s[: sc.prefix_len] for s in true_strings(g, jax.random.fold_in(key, 0), sc.n)]
    ec = EvalConfig(top_k=sc.top_k, decode_batch=sc.decode_batch)
    strings, eos, logp = sample_from_prefixes(
        exp.model.cfg, loaded.host_params, g, prefixes, jax.random.fold_in(key, 1),
        sc.temperature, ec, sc.max_total_len or exp.model.cfg.max_len)
    valid = membership.check_strings(g, strings) & eos
    rows = [{"tokens": s, "prefix_len": len(p), "eos": bool(e), "valid": bool(v),
             "logprob_model": float(lp)}
            for s, p, e, v, lp in zip(strings, prefixes, eos, valid, logp, strict=True)]
    name = f"step{loaded.step}_cut{sc.prefix_len}_{tkey(sc.temperature)}"
    return {"sample_config": dataclasses.asdict(sc), "n": len(rows),
            "accuracy": float(np.mean(valid)), "records": {name: rows}}


SAMPLER = Handler(settings=SampleConfig, run=_run)
