"""Subtree diversity of generated CFG strings, the way Part 1 measures it (paper §3, diversity).

The distinct-string share says little once strings are hundreds of tokens long: two random
strings almost never coincide. The paper instead looks inside: for every NT symbol at every level,
how many *distinct subtrees* (here: distinct substrings the symbol derives) appear among the
model's strings versus among as many true strings, and how large the symbol's support must be,
estimated from collisions (the birthday paradox). A model that memorised a few strings shows few
distinct subtrees and many collisions at the upper levels.

How it is computed (`subtree_diversity`):
- each string is parsed (`data/cfg/parse.py`: one derivation, the same deterministic choice for
  model and true strings; strings that are no member, or did not end, are left out);
- every node (level l < D, symbol s, span [i, e)) contributes the sample tokens[i:e] to (l, s);
- per (l, s): n = occurrences, distinct = distinct substrings, collisions = pairs of equal
  samples (sum over values of C(count, 2)), and the birthday estimate of the support
  C(n, 2) / collisions: the exact support of a uniform distribution in expectation, and for a
  skewed one its effective size 1 / sum p^2 (a lower bound on the true support). With no
  collision the estimate is unbounded and `support_lower_bound` = C(n, 2) is reported instead
  (the support at which one collision would be expected: an order of magnitude, not a bound
  with a confidence level). Occurrences inside one string are not independent draws.
- the true strings are cut to as many strings as there are parsed generations, so both columns
  have the same number of strings.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Hashable, Sequence
from typing import Any

from physics_lm.data.cfg.grammar import Grammar
from physics_lm.data.cfg.parse import parse_spans


def birthday(samples: Sequence[Hashable]) -> dict[str, Any]:
    """n, distinct, collisions and the birthday-paradox support estimate of a multiset."""
    n = len(samples)
    counts = Counter(samples)
    collisions = sum(c * (c - 1) // 2 for c in counts.values())
    pairs = n * (n - 1) // 2
    return {"n": n, "distinct": len(counts), "collisions": collisions,
            "support_estimate": pairs / collisions if collisions else None,
            "support_lower_bound": pairs if not collisions and n >= 2 else None}


def subtree_samples(grammar: Grammar, strings: Sequence[Sequence[int]]
                    ) -> tuple[list[list[list[tuple[int, ...]]]], int]:
    """(samples[l][s] = substrings derived by symbol s of level l, number of parsed strings).

    Strings with no derivation are skipped (the count says how many were used).
    """
    samples: list[list[list[tuple[int, ...]]]] = [[[] for _ in range(size)]
                                                  for size in grammar.sizes[:-1]]
    used = 0
    for tokens in strings:
        spans = parse_spans(grammar, tokens)
        if spans is None:
            continue
        used += 1
        tok = tuple(int(t) for t in tokens)
        for level, nodes in enumerate(spans[:-1]):
            for sym, i, e in nodes:
                samples[level][sym].append(tok[i:e])
    return samples, used


def subtree_diversity(grammar: Grammar, generated: Sequence[Sequence[int]],
                      truth: Sequence[Sequence[int]]) -> dict[str, Any]:
    """Distinct subtrees and support estimates per (level, NT), generated vs true strings.

    Args:
      grammar: the grammar.
      generated: the model's finished strings (any; non-members are skipped).
      truth: true strings (at least as many as the parsed generations, else all are used).

    Returns:
      {"n_strings", "n_truth_strings", "levels": [{"level", "nts": [{"nt", "generated",
      "truth"}]}], "distinct_generated" / "distinct_truth": per-level sums over NTs,
      "distinct_ratio": all distinct generated subtrees of levels >= 1 over the true ones
      (None without any)}; the per-NT stats are `birthday`'s.
    """
    gen, n_gen = subtree_samples(grammar, generated)
    tru, n_tru = subtree_samples(grammar, truth[:n_gen])
    levels = []
    for level in range(grammar.depth):
        nts = [{"nt": s, "generated": birthday(gen[level][s]), "truth": birthday(tru[level][s])}
               for s in range(grammar.sizes[level])]
        levels.append({"level": level, "nts": nts})
    sums = {who: [sum(nt[who]["distinct"] for nt in lv["nts"]) for lv in levels]
            for who in ("generated", "truth")}
    below_root = sum(sums["truth"][1:])
    return {"n_strings": n_gen, "n_truth_strings": n_tru, "levels": levels,
            "distinct_generated": sums["generated"], "distinct_truth": sums["truth"],
            "distinct_ratio": sum(sums["generated"][1:]) / below_root if below_root else None}
