"""Command line for the frozen sets: `python -m physics_lm.data.tfds COMMAND [options]`."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from physics_lm.data import cli

COMMANDS: dict[str, str] = {
    "build": "physics_lm.data.tfds.build_cli",
    "list": "physics_lm.data.tfds.list_cli",
}


def main(argv: Sequence[str] | None = None) -> int:
    return cli.main("python -m physics_lm.data.tfds", COMMANDS, argv)


if __name__ == "__main__":
    sys.exit(main())
