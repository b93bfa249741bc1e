"""Host reference of the iGSM template hash (SPEC §14): the solution "sketch" and its bin.

The official generator hashes a sketch of the solution text (parameter names replaced by
"Inst"/"Inter", numbers by "0", ";" by ".", symbols renamed a, b, c, ... by first appearance) with
SHA-256; the bin is the hash mod 23. The sampler computes the same bins on device from the step
plan (`gen/template_hash.py`); the tests pin one against the other.
"""

from __future__ import annotations

import hashlib
import re

from physics_lm.data.igsm.text.names import CATEGORIES

N_BINS = 23
LETTERS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"  # symbols, in renaming order


def sketch_text(solution: str, names: list[str] | None = None,
                inter_names: list[str] | None = None) -> str:
    """Host reference of the official `to_sketch(...)['sol']` of a solution text.

    With `names` / `inter_names` (instance / abstract parameter names in `all_param` order) the
    names are replaced by plain string replacement as the official code does, quirks included:
    a name that is a substring of another one ("Frog's Caudal Vertebrae 1" inside "Poison Dart
    Frog's Caudal Vertebrae 12") garbles the sketch, which changes the bin of ~1 % of problems.
    Without them, each "Define <name> as" is replaced as a whole (Inter when the name ends with a
    category), which is the quirk-free sketch the JAX hash computes.
    """
    sol = " " + solution if not solution.startswith(" ") else solution
    if names is None:
        cats = set(CATEGORIES)
        sol = re.sub(r"Define (.+?) as ", lambda m: "Define Inter as " if m.group(1).rsplit(
            "'s ", 1)[-1] in cats else "Define Inst as ", sol)
    else:
        for n in names:
            sol = sol.replace(n, "Inst")
        for n in inter_names or []:
            sol = sol.replace(n, "Inter")
    for i in range(22, 0, -1):
        sol = sol.replace(str(i), "0")
    sol = sol.replace(";", ".")
    groups = [s.split(" ") for s in sol.split(". ")]
    order: list[str] = []
    for grp in groups:
        for part in grp:
            if part in _LETTER_SET and part not in order:
                order.append(part)
    ren = {s: LETTERS[i] for i, s in enumerate(order)}
    return ". ".join(" ".join(ren.get(p, p) for p in grp) for grp in groups)


_LETTER_SET = frozenset(LETTERS)


def host_bin(sketch: str) -> int:
    """The official template bin of a sketch: its SHA-256 as an integer, mod 23."""
    return int(hashlib.sha256(sketch.encode()).hexdigest(), 16) % N_BINS
