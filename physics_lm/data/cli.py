"""One command line for every data family: ``python -m physics_lm.data.<family> COMMAND [options]``.

A family's ``__main__.py`` names its commands in a dict (command -> module) and calls :func:`main`.
A command module defines ``add_arguments(parser)`` and ``run(args) -> int`` (the exit status); the
first line of its docstring is the command's help. Only the module of the command that runs is
imported (``--help`` imports them all, for their help lines), so a host-only command never pays for
another command's imports (JAX). Every error is one line on stderr and exit status 2: no or an
unknown command, a usage error (argparse), a ``ValueError`` raised by ``run`` (bad input), or an
``OSError`` (a file that cannot be read or written).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Mapping, Sequence
from types import ModuleType
from typing import NoReturn


class _Parser(argparse.ArgumentParser):
    """Usage errors as one line (no usage dump), exit status 2, like the ValueErrors of `run`."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n")


def command_help(module: ModuleType) -> str:
    """The first line of a command module's docstring."""
    doc = (module.__doc__ or "").strip()
    return doc.splitlines()[0] if doc else module.__name__


def usage(prog: str, commands: Mapping[str, str]) -> str:
    """The top-level help: the commands and their one-line help."""
    width = max(len(name) for name in commands)
    lines = [f"usage: {prog} COMMAND [options]", "", "commands:"]
    lines += [f"  {name:<{width}}  {command_help(importlib.import_module(module))}"
              for name, module in commands.items()]
    lines += ["", f"'{prog} COMMAND --help' lists the options of a command."]
    return "\n".join(lines)


def main(prog: str, commands: Mapping[str, str], argv: Sequence[str] | None = None) -> int:
    """Runs ``argv[0]``, one of ``commands`` (name -> module), on the rest of ``argv``.

    Returns the exit status; usage errors raise SystemExit(2) (and --help SystemExit(0)) from
    argparse as usual.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] in (["-h"], ["--help"]):
        print(usage(prog, commands))
        return 0
    known = ", ".join(commands)
    if not argv or argv[0] not in commands:
        what = f"unknown command {argv[0]!r}" if argv else "no command"
        print(f"{prog}: error: {what} (known: {known}; --help lists them)", file=sys.stderr)
        return 2
    name = argv[0]
    module = importlib.import_module(commands[name])
    parser = _Parser(prog=f"{prog} {name}", description=command_help(module))
    module.add_arguments(parser)
    args = parser.parse_args(argv[1:])
    try:
        return module.run(args)
    except ValueError as e:
        print(f"{prog} {name}: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # an input that is missing or unreadable, an output that is unwritable
        print(f"{prog} {name}: error: {e.filename or ''}: {e.strerror or e}", file=sys.stderr)
        return 2
