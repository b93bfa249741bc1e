"""List the builders, their config bases, and the sets built in a data_dir.

    python -m physics_lm.data.tfds list [--data_dir DIR]
"""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data_dir", default=None, help="also list the sets built here")


def run(ns: argparse.Namespace) -> int:
    from physics_lm.data.tfds import BUILDERS, bases

    for builder, (_, family) in BUILDERS.items():
        print(f"{builder} (eval of task.name={family}): {', '.join(bases(builder))}")
        root = Path(ns.data_dir or "") / builder
        if ns.data_dir and root.is_dir():
            for info in sorted(root.glob("*/*/dataset_info.json")):
                print(f"  built: {builder}/{info.parent.parent.name} {info.parent.name}")
    return 0
