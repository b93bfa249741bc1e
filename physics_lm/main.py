"""Entry point: `python -m physics_lm.main --config=configs/cfg.py:smoke --workdir=DIR`.

Parses flags, validates the config (physics_lm/config.py) and hands it to the function that
`cfg.mode` names (physics_lm/modes.py). Everything else lives in importable modules so tests and
notebooks can call `train_and_evaluate(cfg, workdir)` directly. A bad flag, config file, override
or workdir is one line on stderr and exit code 2, never a traceback; a non-finite loss is one
line and exit code 3 (launch/babysit.py relaunches neither: a relaunch would fail the same way).
"""

from __future__ import annotations

import logging as std_logging
import re
import sys
from pathlib import Path

from absl import app, flags, logging
from ml_collections import config_flags

from physics_lm import compile_cache, modes
from physics_lm.config import ConfigError, from_config_dict

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file[:arg].",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory (config, metrics, checkpoints).")
_COMPILE_CACHE = flags.DEFINE_string(
    "compile_cache", compile_cache.DEFAULT_DIR,
    "Persistent XLA compilation cache folder, shared by runs ('' = none; "
    "physics_lm/compile_cache.py).")


class _QuietLibraries(std_logging.Filter):
    """Keeps library INFO chatter (orbax logs every save phase) out of the progress log."""

    def filter(self, record: std_logging.LogRecord) -> bool:
        return record.levelno >= std_logging.WARNING or "orbax" not in record.pathname


def _fail(message: str, code: int = 2) -> None:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(code)


def _config_path(argv: list[str]) -> str | None:
    """The file of `--config=FILE[:arg]` (or `--config FILE`), if given."""
    for i, a in enumerate(argv):
        if a.startswith("--config="):
            return a.split("=", 1)[1].split(":", 1)[0]
        if a == "--config" and i + 1 < len(argv):
            return argv[i + 1].split(":", 1)[0]
    return None


def describe_flag_error(e: BaseException, argv: list[str]) -> str:
    """One line for a flag-parsing failure: an unknown override key names the flag and the
    suggestion ml_collections makes; otherwise the flag (when absl names it) and the innermost
    error's message (e.g. what the config file's get_config raised)."""
    chain = [e]
    while chain[-1].__cause__ is not None or chain[-1].__context__ is not None:
        chain.append(chain[-1].__cause__ or chain[-1].__context__)
    texts = [str(x.args[0]) if x.args else str(x) for x in chain]
    missing = next((x for x in reversed(chain) if isinstance(x, KeyError)), None)
    if missing is not None and missing.args:
        name = str(missing.args[0]).strip("'\"").splitlines()[0].strip("'\"")
        flag = next((a.split("=", 1)[0] for a in argv
                     if a.startswith("--config.") and name in a.split("=", 1)[0].split(".")), None)
        hint = next((m.group(1) for t in texts if (m := re.search(r'Did you mean "([^"]+)"', t))),
                    None)
        return (f"{flag + ': ' if flag else ''}unknown config key {name!r}"
                + (f" (did you mean {hint!r}?)" if hint else ""))
    flag = re.match(r"flag (--\S+?): ", texts[0])
    lines = [line.strip() for line in texts[-1].splitlines() if line.strip()]
    inner = lines[0] if lines else type(chain[-1]).__name__
    return f"{flag.group(1) + ': ' if flag else 'bad flags: '}{inner}"


def parse_flags(argv: list[str]) -> list[str]:
    """absl's flag parsing, with every failure turned into one line and exit 2."""
    path = _config_path(argv)
    if path is not None and not Path(path).is_file():
        _fail(f"--config={path}: no such config file")
    try:
        rest = flags.FLAGS(argv)
        _ = _CONFIG.value  # a config file that failed to load raises here
    except ConfigError as e:
        _fail(str(e))
    except Exception as e:  # flags.Error, ml_collections KeyError/AttributeError, get_config's
        _fail(describe_flag_error(e, argv))
    return rest


def main(argv: list[str]) -> int:
    del argv
    logging.get_absl_handler().addFilter(_QuietLibraries())
    if _CONFIG.value is None or not _WORKDIR.value:
        _fail("--config and --workdir are required")
    try:
        cfg = from_config_dict(_CONFIG.value)
        cache = compile_cache.enable(_COMPILE_CACHE.value, explicit=_COMPILE_CACHE.present)
        logging.info("compilation cache: %s", cache or "off")
        if cfg.mesh.distributed:
            from physics_lm.train import distributed
            distributed.initialize()
        result = modes.mode_function(cfg.mode)(cfg, _WORKDIR.value)
    except ConfigError as e:
        _fail(str(e))
    except RuntimeError as e:  # a non-finite loss: a relaunch would replay the same steps
        from physics_lm.train.trainer import NonFiniteLossError
        if not isinstance(e, NonFiniteLossError):
            raise
        _fail(str(e), code=3)
    logging.info("done: %s", {k: v for k, v in result.items() if "/" not in k or
                              k.startswith("path/")})
    return 0


def entry() -> None:
    app.run(lambda argv: sys.exit(main(argv)), flags_parser=parse_flags)


if __name__ == "__main__":
    entry()
