"""A persistent XLA compilation cache shared by every run, eval and sampler on this machine.

Why: the same programs are compiled again and again: a relaunched run recompiles its train step
(≈40 s for the tiny iGSM model on 2 CPU cores, minutes for the big models on a pod), every eval
of every model recompiles the same cell samplers, every point of a sweep with one shape the same
step. JAX can keep compiled executables on disk, keyed by the program, its shardings, the
compiler flags and the JAX/XLA version, so a hit is the same executable (results bit-identical).
Measured here: a 4-step tiny iGSM run 88 s -> 24 s wall on its second launch (train step compile
38.6 s -> 5.7 s); `python -m physics_lm.data.igsm sample --n 2000` 24 s -> 7.7 s.

Where: `--compile_cache=DIR` ("" = off); without the flag, JAX_COMPILATION_CACHE_DIR where the
environment sets it (the test suite sets its own), else DEFAULT_DIR. Only compiles of >= 1 s are
kept (JAX's default, JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS); the folder is not size-capped
(JAX_COMPILATION_CACHE_MAX_SIZE caps it, with the `filelock` package installed) and can be
deleted at any time.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from absl import logging

from physics_lm.config import ConfigError

DEFAULT_DIR = "~/.cache/physics_lm/jax"
ENV = "JAX_COMPILATION_CACHE_DIR"


def enable(directory: str = DEFAULT_DIR, *, explicit: bool = False) -> Path | None:
    """Points JAX's persistent compilation cache at `directory`; returns the local folder in use
    (None: no cache, or a remote one such as gs://bucket/cache, passed to JAX as it is).

    Call before the first compile. Precedence: a folder the user gave (`explicit`; "" = none),
    then JAX_COMPILATION_CACHE_DIR, then `directory`. A folder that cannot be created is a
    ConfigError naming it when the user gave it, and a warning (no cache, the run goes on) for
    the default: a read-only home must not stop a run.
    """
    import jax  # here: the data command lines import this module for --help, without JAX

    if not explicit and os.environ.get(ENV):
        return Path(os.environ[ENV])
    if not directory:
        if explicit:
            jax.config.update("jax_enable_compilation_cache", False)
        return None
    if "://" in directory:  # gs://… on a pod: one cache for every host, opened by JAX (etils)
        jax.config.update("jax_compilation_cache_dir", directory)
        return None
    path = Path(directory).expanduser()
    try:
        path.mkdir(parents=True, exist_ok=True)
        if not os.access(path, os.W_OK):
            raise PermissionError(13, "not writable")
    except OSError as e:
        why = e.strerror or type(e).__name__
        if explicit:
            raise ConfigError(f"--compile_cache={directory}: cannot use this folder ({why}); "
                              "give another or --compile_cache= for none") from None
        logging.warning("compilation cache off: %s (%s)", path, why)
        return None
    jax.config.update("jax_compilation_cache_dir", str(path))
    return path


def add_argument(parser: argparse.ArgumentParser) -> None:
    """`--compile_cache DIR` for a data command line (see `enable_from_arg`)."""
    parser.add_argument("--compile_cache", default=None,
                        help=f"persistent XLA compilation cache folder (default {DEFAULT_DIR}; "
                             "'' = none)")


def enable_from_arg(value: str | None) -> Path | None:
    """`enable` for a command-line value: None = the default folder, anything else explicit."""
    return enable(DEFAULT_DIR) if value is None else enable(value, explicit=True)
