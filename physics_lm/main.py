"""Entry point: `python -m physics_lm.main --config=configs/cfg.py:smoke --workdir=DIR`.

Parses flags, validates the config (physics_lm/config.py) and hands it to the function that
`cfg.mode` names. Everything else lives in importable modules so tests and notebooks can call
`train_and_evaluate(cfg, workdir)` directly.
"""

from __future__ import annotations

import importlib
import logging as std_logging
import sys

from absl import app, flags, logging
from ml_collections import config_flags

from physics_lm.config import ConfigError, from_config_dict

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file[:arg].",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory (config, metrics, checkpoints).")

# mode -> "module:function(cfg, workdir)"; imported lazily so one mode never pays for another.
MODES = {
    "train": "physics_lm.train.trainer:train_and_evaluate",
    "eval": "physics_lm.eval.run:evaluate_checkpoint",
    "probe": "physics_lm.probing.run:probe_checkpoint",
    "sample": "physics_lm.eval.run:sample_checkpoint",
}


def _resolve(mode: str):
    module, fn = MODES[mode].split(":")
    try:
        return getattr(importlib.import_module(module), fn)
    except ModuleNotFoundError as e:
        raise ConfigError(f"mode={mode!r} is not available in this build ({e})") from None


class _QuietLibraries(std_logging.Filter):
    """Keeps library INFO chatter (orbax logs every save phase) out of the progress log."""

    def filter(self, record: std_logging.LogRecord) -> bool:
        return record.levelno >= std_logging.WARNING or "orbax" not in record.pathname


def main(argv: list[str]) -> int:
    del argv
    logging.get_absl_handler().addFilter(_QuietLibraries())
    if _CONFIG.value is None or not _WORKDIR.value:
        print("error: --config and --workdir are required", file=sys.stderr)
        return 2
    try:
        cfg = from_config_dict(_CONFIG.value)
        if cfg.mesh.distributed:
            import jax
            jax.distributed.initialize()
        run = _resolve(cfg.mode)
        result = run(cfg, _WORKDIR.value)
    except ConfigError as e:
        print(f"config error: {e}", file=sys.stderr)
        return 2
    logging.info("done: %s", result)
    return 0


def entry() -> None:
    app.run(lambda argv: sys.exit(main(argv)))


if __name__ == "__main__":
    entry()
