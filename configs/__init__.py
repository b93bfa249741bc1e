"""Experiment configs, one file per family (big_vision style): `get_config(arg)` and `sweep(add)`.

Installed as `physics_lm.configs` (setup.py maps this folder), so configs import each other as
modules (`from physics_lm.configs import common`) wherever they are run from, while
`--config=configs/<family>.py[:arg]` still names them by path.
"""

from __future__ import annotations

import importlib
import importlib.util
from pathlib import Path
from types import ModuleType

_HERE = Path(__file__).resolve().parent


def load_module(path: str | Path) -> ModuleType:
    """The module of a config file: this package's own files by import, any other by path."""
    path = Path(str(path).split(":", 1)[0])
    if path.resolve().parent == _HERE:
        return importlib.import_module(f"{__name__}.{path.stem}")
    if not path.is_file():
        raise FileNotFoundError(f"no such config file: {path}")
    spec = importlib.util.spec_from_file_location(f"config_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
