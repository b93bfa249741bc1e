"""The iGSM category chains and item-name pools, loaded from the shipped ``names.json``.

The names are facts from the official iGSM release (Physics of Language Models, Part 2.1/2.2;
``facebookresearch/iGSM``, file ``data_gen/categ.py``; MIT licence, Copyright (c) Meta Platforms,
Inc. and affiliates). They are transcribed as data, not code; see ``NAMES_SOURCE.md`` beside this
file.

Everything here is immutable so that the vocabulary built from it (and therefore every token id) is
the same in every process.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

_NAMES_FILE = Path(__file__).with_name("names.json")


def _load() -> dict:
    with _NAMES_FILE.open(encoding="utf-8") as f:
        return json.load(f)


_DATA = _load()

CHAINS: tuple[tuple[str, ...], ...] = tuple(tuple(chain) for chain in _DATA["chains"])
"""4 chains x 4 category names, top layer first (e.g. District -> Supermarket -> Product -> ...)."""

CATEGORIES: tuple[str, ...] = tuple(c for chain in CHAINS for c in chain)
"""The 16 category names, chain by chain."""

POOL_NAMES: dict[str, tuple[str, ...]] = {
    cat: tuple(_DATA["categories"][cat]) for cat in CATEGORIES
}
"""Category -> the titles of its 5 sub-pools (e.g. "Residential Districts"), in official order."""

POOLS: dict[str, tuple[tuple[str, ...], ...]] = {
    cat: tuple(tuple(items) for items in _DATA["categories"][cat].values()) for cat in CATEGORIES
}
"""Category -> its 5 sub-pools, each a tuple of item names in the official order."""

SOURCE: str = _DATA["source"]


@cache
def category_items(category: str) -> frozenset[str]:
    """All distinct item names of one category (union of its sub-pools)."""
    return frozenset(name for pool in POOLS[category] for name in pool)


@cache
def all_item_names() -> frozenset[str]:
    """Every distinct item string of every category (1,516 names)."""
    return frozenset(name for cat in CATEGORIES for name in category_items(cat))


@cache
def item_categories() -> dict[str, tuple[str, ...]]:
    """Item name -> the categories it belongs to (usually one; e.g. "Popcorn" has two)."""
    out: dict[str, list[str]] = {}
    for cat in CATEGORIES:
        for name in sorted(category_items(cat)):
            out.setdefault(name, []).append(cat)
    return {name: tuple(cats) for name, cats in out.items()}


PLACE: dict[str, tuple[int, int]] = {
    cat: (c, n) for c, chain in enumerate(CHAINS) for n, cat in enumerate(chain)}
"""Category -> (its chain, its layer in the chain, top first): where a name sits in CHAINS."""
