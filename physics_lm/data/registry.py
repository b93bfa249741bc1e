"""Task registry: config `task.name` -> the data family's Task (validated by its constructor)."""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any

from physics_lm.config import ConfigError, TaskConfig
from physics_lm.data.batch import Task

# name -> "module:Class"; imported lazily so a CFG run never imports the iGSM tables.
TASKS = {
    "cfg": "physics_lm.data.cfg.task:CFGTask",
    "igsm": "physics_lm.data.igsm.task:IGSMTask",
}


def build_task(tc: TaskConfig, overrides: Mapping[str, Any] | None = None) -> Task:
    if tc.name not in TASKS:
        raise ConfigError(f"task.name={tc.name!r}: unknown task; known: {', '.join(TASKS)}")
    module, cls_name = TASKS[tc.name].split(":")
    cls = getattr(importlib.import_module(module), cls_name)
    kwargs = {**tc.kwargs, **(overrides or {})}
    try:
        return cls(**kwargs)
    except TypeError as e:  # unknown keyword
        raise ConfigError(f"task ({tc.name}): {e}") from None
    except ValueError as e:
        raise ConfigError(f"task ({tc.name}): {e}") from None
