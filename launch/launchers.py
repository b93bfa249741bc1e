"""Where a sweep entry runs: a registry of launchers, each turning one training command into
the commands that run it there.

The interface (what `physics_lm.launch.sweep` calls; a pod/cluster launcher module provides
it as its `command` function):

    command(argv: list[str], **launcher_args: str) -> list[list[str]]

`argv` is the portable training command, `["python", "-m", "physics_lm.main", "--config=...",
"--config.<key>=<value>", ..., "--workdir=..."]` (argv[0] is the literal `python`: the launcher
knows which interpreter runs it there). It returns the commands to run *on this machine*, in
order (e.g. copy the code, then run on every worker); the entry succeeded when all exit 0, and
a command that returns only after the run ended lets the sweep track it (`--status`).
`launcher_args` are the sweep's `--launcher_arg=KEY=VALUE` flags (e.g. `tpu=NAME`, `zone=...`),
passed through as strings. `local` runs the command here; the others are modules written beside
this one and resolved when first used, so a missing one fails with one line, not at import.
"""

from __future__ import annotations

import importlib
import shlex
import subprocess
import sys
from collections.abc import Callable

Launcher = Callable[..., list[list[str]]]

# name -> "module:function"
LAUNCHERS: dict[str, str] = {
    "local": f"{__name__}:local",
    "tpu_pod": "physics_lm.launch.tpu_pod:sweep_command",
    "xpk": "physics_lm.launch.xpk:sweep_command",
    "slurm": "physics_lm.launch.slurm:sweep_command",
}


class LauncherError(ValueError):
    """An unknown or unavailable launcher, or arguments it does not take."""


def local(argv: list[str], **launcher_args: str) -> list[list[str]]:
    """Runs the command on this machine with this interpreter."""
    if launcher_args:
        raise LauncherError(f"--launcher=local takes no --launcher_arg (got {launcher_args})")
    return [[sys.executable if argv[0] == "python" else argv[0], *argv[1:]]]


def get(name: str) -> Launcher:
    """The launcher registered as `name`."""
    if name not in LAUNCHERS:
        raise LauncherError(f"--launcher={name}: unknown; known: {', '.join(LAUNCHERS)}")
    module_name, _, attr = LAUNCHERS[name].partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        if e.name != module_name:
            raise
        raise LauncherError(f"--launcher={name}: {module_name} is not installed in this "
                            "checkout") from None
    fn = getattr(module, attr, None)
    if not callable(fn):
        raise LauncherError(f"--launcher={name}: {module_name} has no {attr}(argv, **args)")
    return fn


def as_cli(argv: list[str], launcher_args: dict[str, str]) -> list[str]:
    """A pod launcher's own command line for a sweep entry: `--KEY=VALUE` per launcher arg, then
    `--` and physics_lm.main's flags (argv without its `python -m physics_lm.main`)."""
    if argv[1:3] != ["-m", "physics_lm.main"]:
        raise LauncherError(f"not a physics_lm.main command: {argv[:3]}")
    return [*(f"--{k}={v}" for k, v in launcher_args.items()), "--", *argv[3:]]


def checked(name: str, parse: Callable[[list[str]], object], cli: list[str]) -> object:
    """`parse(cli)`, with argparse's exit turned into a one-line LauncherError."""
    try:
        return parse(cli)
    except SystemExit:
        raise LauncherError(f"--launcher={name}: bad --launcher_arg (see the usage above)"
                            ) from None


def run_commands(cmds: list[list[str]], dry_run: bool) -> int:
    """Prints each command and (unless `dry_run`) runs it; stops at the first failure's code."""
    for cmd in cmds:
        print(shlex.join(cmd), flush=True)
        if not dry_run:
            rc = subprocess.run(cmd, check=False).returncode
            if rc:
                return rc
    return 0


def parse_args(pairs: list[str]) -> dict[str, str]:
    """`["tpu=my-tpu", "zone=us-east5-a"]` -> {"tpu": "my-tpu", "zone": "us-east5-a"}."""
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.isidentifier():
            raise LauncherError(f"--launcher_arg={pair}: expected KEY=VALUE")
        out[key] = value
    return out
