"""Command line for Part 2 data: `python -m physics_lm.data.igsm COMMAND [options]`.

Adding a command takes one line in COMMANDS: a module with `add_arguments(parser)` and
`run(args) -> int` (see `physics_lm/data/cli.py`, shared by every data family). `judge` and
`tokenize` never import JAX.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from physics_lm.data import cli

COMMANDS: dict[str, str] = {
    "judge": "physics_lm.data.igsm.judge_cli",
    "labels": "physics_lm.data.igsm.labels_cli",
    "sample": "physics_lm.data.igsm.sample_cli",
    "templates": "physics_lm.data.igsm.templates_cli",
    "tokenize": "physics_lm.data.igsm.tokenize_cli",
}


def main(argv: Sequence[str] | None = None) -> int:
    return cli.main("python -m physics_lm.data.igsm", COMMANDS, argv)


if __name__ == "__main__":
    sys.exit(main())
