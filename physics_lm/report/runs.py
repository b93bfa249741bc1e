"""Finding a sweep's runs and reading what their modes wrote."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

GAP = "—"


@dataclasses.dataclass
class Run:
    """One workdir: its config and the JSON docs of each mode, by file stem (e.g. "igsm")."""

    name: str
    config: dict[str, Any]
    docs: dict[str, dict[str, dict[str, Any]]]  # mode folder -> stem -> doc
    path: Path | None = None  # the workdir (metrics.jsonl, checkpoints/)

    def cfg(self, *path: str) -> Any:
        return get(self.config, *path)

    def doc(self, mode: str, stem: str) -> dict[str, Any] | None:
        return self.docs.get(mode, {}).get(stem)

    @property
    def family(self) -> str | None:
        return self.cfg("task", "name")

    def task(self, key: str, default: Any = None) -> Any:
        """A task setting: config.json keeps the task's kwargs beside its name."""
        task = self.config.get("task") or {}
        value = (task.get("kwargs") or {}).get(key, task.get(key))
        return default if value is None else value

    @property
    def model_name(self) -> str:
        layers, width = self.cfg("model", "num_layers"), self.cfg("model", "d_model")
        return f"{layers}x{width}" if layers and width else GAP


def get(d: Any, *path: Any) -> Any:
    """d[path[0]][path[1]]..., or None where any step is missing."""
    for key in path:
        if not isinstance(d, dict) or key not in d:
            return None
        d = d[key]
    return d


def _read(path: Path) -> dict[str, Any] | None:
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError):
        return None  # a file being written, or not JSON: a gap
    return doc if isinstance(doc, dict) else None


def find_runs(root: Path) -> list[Run]:
    """Every folder under `root` (itself included) with a readable config.json, by path."""
    runs = []
    for cfg_path in sorted(Path(root).rglob("config.json")):
        config = _read(cfg_path)
        if config is None:
            continue
        work = cfg_path.parent
        docs = {mode: {p.stem: d for p in sorted((work / mode).glob("*.json"))
                       if (d := _read(p)) is not None}
                for mode in ("eval", "probe", "regret")}
        name = str(work.relative_to(root)) if work != Path(root) else work.name
        runs.append(Run(name, config, docs, work.absolute()))
    return runs
