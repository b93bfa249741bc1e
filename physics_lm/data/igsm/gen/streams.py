"""Every random stream of the iGSM generator, named in one place.

A draw is `rand.bits(seed, salt, t, n)`: the salt names the stream, `t` the step inside it. Two
call sites sharing a salt under the same seed would draw the same numbers and silently correlate
(a test asserts the salts are distinct, and that the generator passes no bare integer). The
values are those of the original code and must never change: they fix the sampler's output for
a given key. Grouped by the seed they are applied to.
"""

from __future__ import annotations

# Batch seed (`rand.seed_of(key)`), in `sampler.py`.
TARGET_OP = 70  # the target op of every row
ROUND = 71  # one child seed per selection round
CANDIDATE = 72  # (under the round's seed) one seed per candidate lane

# Candidate seed: the outer attempt (`candidate.py`) and the stages run on selected rows.
HYPER = 1  # graph hyper-parameters, the op budget s among them (`hyper.py`)
INNER_TRY = 20  # one child seed per inner try (structure + backward sort)
DESIGN_EXTRA = 8  # which solution steps get the extra operands (`design.py`)
DESIGN_COUNT = 9  # operand counts (one or two) and the RNG operand
DESIGN_OPERANDS = 10  # which earlier parameters become operands
UNNECESSARY = 11  # unnecessary parameters and their dependencies (`unnecessary.py`)
CONSTS = 30  # sentence constants: c, "times" or "more", "difference" or "sum" (`plan.py`)
REASK_QUESTION = 12  # reask sets: the new question parameter (`reask.py`)
REASK_SORT = 13  # reask sets: the parameter placed at each step of the new solution order

# Inner-try seed (`rand.sub_seed(candidate seed, INNER_TRY, try)`).
WIDTHS = 2  # layer widths (`structure.py`)
EDGES = 3  # structure edges
FIX_EDGES = 4  # the extra necessary edges of `choose_param`
CHOOSE_PARAM = 5  # the abstract parameters `choose_param` tries
SORT_PROBS = 6  # the two probabilities of the backward sort (`sort.py`)
SORT_STEP = 7  # the node placed at each step, and its extra dependency

# Seed of the key `fold_in(key, KEY_RENDER)`, in `sampler.py`.
ROW = 73  # one render seed per row

# Render seed (one per row), in `render.py`.
NAMES = 50  # category chain, its start layer and the name pool of every layer
NAME_ORDER = 51  # which items of each pool are used
SENTENCE_ORDER = 52  # the order of the problem sentences
SYMBOLS = 53  # the permutation of the 52 variable letters
RETRY_COUNT = 54  # retry data: the number of BACK sentences before each solution sentence
RETRY_PICK = 55  # retry data: the wrong parameters, one key per (sentence, all_param column)

# `jax.random.fold_in`s of the batch key (key streams, not salts).
KEY_RENDER = 1  # the per-row render seeds
KEY_REASK = 2  # reask sets: one child key per round of original problems (`sampler.py`)


def salts() -> dict[str, int]:
    """Name -> value of every salt above (the key stream `KEY_RENDER` excluded)."""
    return {k: v for k, v in globals().items()
            if k.isupper() and isinstance(v, int) and not k.startswith("KEY_")}
