"""Command line for Part 1 data: `python -m physics_lm.data.cfg COMMAND [options]`.

Adding a command takes one line in COMMANDS: a module with `add_arguments(parser)` and
`run(args) -> int` (see `physics_lm/data/cli.py`, shared by every data family).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from physics_lm.data import cli

COMMANDS: dict[str, str] = {
    "sample": "physics_lm.data.cfg.sample_cli",
    "verify": "physics_lm.data.cfg.verify_cli",
    "nexttoken": "physics_lm.data.cfg.nexttoken_cli",
}


def main(argv: Sequence[str] | None = None) -> int:
    return cli.main("python -m physics_lm.data.cfg", COMMANDS, argv)


if __name__ == "__main__":
    sys.exit(main())
