"""Runs (or prints) one training command per entry of a config file's `sweep(add)`.

  python launch/sweep.py --config=configs/cfg.py[:ARG] --root=runs/part1 [--dry_run] [-- FLAGS]

Each entry becomes `--config.<key>=<value>` overrides and its own workdir under --root, named
from the overrides, so relaunching the sweep resumes every run where it stopped.
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
from pathlib import Path

from physics_lm.configs import load_module


def sweep_entries(config_path: str) -> list[dict]:
    path = config_path.split(":")[0]
    module = load_module(path)
    if not hasattr(module, "sweep"):
        raise SystemExit(f"{path} defines no sweep(add)")
    entries: list[dict] = []
    module.sweep(lambda **kw: entries.append(kw))
    return entries


def commands(config: str, root: str, extra: list[str]) -> list[list[str]]:
    out = []
    for entry in sweep_entries(config):
        name = "_".join(f"{k.split('.')[-1]}={v}" for k, v in entry.items())
        flags = [f"--{k}={v}" for k, v in entry.items()]
        out.append([sys.executable, "-m", "physics_lm.main", f"--config={config}", *flags,
                    f"--workdir={Path(root) / name}", *extra])
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", required=True)
    p.add_argument("--root", required=True)
    p.add_argument("--dry_run", action="store_true")
    args, extra = p.parse_known_args()
    extra = [e for e in extra if e != "--"]
    for cmd in commands(args.config, args.root, extra):
        print(shlex.join(cmd), flush=True)
        if not args.dry_run and subprocess.call(cmd) != 0:
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
