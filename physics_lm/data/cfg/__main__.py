"""Command line for Part 1 data: `python -m physics_lm.data.cfg VERB [options]`.

Adding a verb takes one line in COMMANDS: a module with `add_arguments(parser)` and
`run(args) -> int` (exit code). Its docstring's first line becomes the verb's help. A `run` that
raises ValueError (bad input) gets a one-line `error: ...` on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from types import ModuleType

from physics_lm.data.cfg import nexttoken_cli, sample_cli, verify_cli

COMMANDS: dict[str, ModuleType] = {
    "sample": sample_cli,
    "verify": verify_cli,
    "nexttoken": nexttoken_cli,
}


class _Parser(argparse.ArgumentParser):
    """Usage errors as one line (no usage dump), exit code 2, like the ValueErrors of `run`."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message}\n")


def main(argv: Sequence[str] | None = None) -> int:
    parser = _Parser(prog="python -m physics_lm.data.cfg", description=__doc__.splitlines()[0])
    verbs = parser.add_subparsers(dest="command", required=True)
    for name, module in COMMANDS.items():
        summary = (module.__doc__ or name).strip().splitlines()[0]
        module.add_arguments(verbs.add_parser(name, help=summary, description=summary))
    args = parser.parse_args(argv)
    try:
        return COMMANDS[args.command].run(args)
    except ValueError as e:
        print(f"{parser.prog} {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
