"""Build frozen evaluation sets (TFDS, array_record) from the on-device samplers.

    python -m physics_lm.data.tfds build --name igsm_eval_cells/med_pq --data_dir ~/tfds
    python -m physics_lm.data.tfds build --name cfg_eval_sets/cfg3f_n512_s1 --data_dir ~/tfds
    python -m physics_lm.data.tfds build --name igsm_eval_cells/smoke_pq_n32_s0.op_le_3+op_8 ...

`--name` is `builder/config`, config `<base>[_n<N>][_s<SEED>][.<split>+...]` (README.md here).
Building twice gives byte-identical files; a set already built is left as it is.
"""

from __future__ import annotations

import argparse
import sys
import time


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--name", required=True, action="append",
                        help="builder/config (repeat for several sets)")
    parser.add_argument("--data_dir", default=None, help="TFDS data_dir (default: TFDS's own)")


def run(ns: argparse.Namespace) -> int:
    from physics_lm.data.tfds import parse_name, read

    for name in ns.name:
        parse_name(name)  # ValueError -> one line, exit 2
    for name in ns.name:
        t0 = time.time()
        b = read.build(name, ns.data_dir)
        sizes = ", ".join(f"{k} {v.num_examples}" for k, v in b.info.splits.items())
        print(f"{name} {b.version}: {sizes} in {b.data_dir} ({time.time() - t0:.0f}s)",
              file=sys.stderr)
    return 0
