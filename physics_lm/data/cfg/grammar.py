"""Layered context-free grammars of Part 1, as host-side data.

The nine shipped grammars (cfg3b, cfg3i, cfg3h, cfg3g, cfg3f, cfg3e1, cfg3e2, cfg3j, cfg3k) are the
rules of the official Lano-cfg release (facebookresearch/PhysicsLM4, Apache-2.0), stored in
`grammars.json` in a compact form: per grammar `depth`, `num_sym`, `sizes` (symbols per level,
root first) and `rules[l][j]` = the production rules of symbol j on level l, each a list of local
indices into level l + 1. Ids follow the official layout (terminals 1..num_sym; see `global_id`).

Everything the samplers and DPs need is derived here once, as numpy arrays with static shapes.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from pathlib import Path

import numpy as np

_GRAMMAR_FILE = Path(__file__).with_name("grammars.json")
MAX_RULES = 4  # largest number of rules per NT across the shipped grammars (padded to this)
MAX_RULE_LEN = 3  # the official DPs only support rules of length <= 3

Rules = tuple[tuple[tuple[int, ...], ...], ...]  # rules_of_level[j] = rules of symbol j


@dataclasses.dataclass(frozen=True)
class Grammar:
    """A layered CFG: symbols on levels 0 (root) .. depth (terminals), rules go one level down.

    Attributes:
      name: grammar name, e.g. "cfg3f".
      depth: D, the number of rule levels.
      num_sym: number of terminals (token ids 1..num_sym).
      sizes: symbols per level, length D + 1, sizes[0] == 1, sizes[D] == num_sym.
      rules: rules[l][j][r] = tuple of local child indices (level l + 1) of rule r of symbol j.
    """

    name: str
    depth: int
    num_sym: int
    sizes: tuple[int, ...]
    rules: tuple[Rules, ...]

    def __post_init__(self) -> None:
        if len(self.sizes) != self.depth + 1 or self.sizes[0] != 1:
            raise ValueError(f"grammar {self.name}: sizes={self.sizes} must have depth+1 entries, "
                             "starting with 1 (the root)")
        if self.sizes[-1] != self.num_sym:
            raise ValueError(f"grammar {self.name}: sizes[-1]={self.sizes[-1]} != num_sym")
        for l, level in enumerate(self.rules):
            if len(level) != self.sizes[l]:
                raise ValueError(f"grammar {self.name}: level {l} has {len(level)} NTs, "
                                 f"sizes says {self.sizes[l]}")
            for j, rs in enumerate(level):
                if not 1 <= len(rs) <= MAX_RULES:
                    raise ValueError(f"grammar {self.name}: NT ({l},{j}) has {len(rs)} rules, "
                                     f"supported 1..{MAX_RULES}")
                for r in rs:
                    if not 1 <= len(r) <= MAX_RULE_LEN or not all(
                        0 <= c < self.sizes[l + 1] for c in r
                    ):
                        raise ValueError(f"grammar {self.name}: bad rule {r} of NT ({l},{j})")

    # -- ids -------------------------------------------------------------------------------
    @property
    def eos_id(self) -> int:
        """End of string, as in the official code (num_sym + 1)."""
        return self.num_sym + 1

    @property
    def bos_id(self) -> int:
        """Beginning of string: the first id the official code leaves unused above SEP's range."""
        return self.num_sym + 2

    pad_id = 0  # never produced by the grammar

    @property
    def vocab_size(self) -> int:
        return self.num_sym + 3

    def global_id(self, level: int, local: int) -> int:
        """Official global id of symbol `local` on `level` (terminals 1.., NTs after 3 gaps)."""
        if level == self.depth:
            return local + 1
        base = self.num_sym + 4 + sum(self.sizes[level + 1 : self.depth])
        return base + local

    # -- static-shape tables -----------------------------------------------------------------
    @functools.cached_property
    def tables(self) -> tuple[tuple[np.ndarray, np.ndarray, np.ndarray], ...]:
        """Per level l < D: (child int32[S_l, MAX_RULES, 3] (-1 pad), length int32[S_l, MAX_RULES],
        n_rules int32[S_l])."""
        out = []
        for level in self.rules:
            child = -np.ones((len(level), MAX_RULES, MAX_RULE_LEN), np.int32)
            length = np.zeros((len(level), MAX_RULES), np.int32)
            n_rules = np.zeros((len(level),), np.int32)
            for j, rs in enumerate(level):
                n_rules[j] = len(rs)
                for r, rule in enumerate(rs):
                    child[j, r, : len(rule)] = rule
                    length[j, r] = len(rule)
            out.append((child, length, n_rules))
        return tuple(out)

    def _span_stat(self, reduce_rules, combine) -> list[list[np.ndarray]]:
        """stat[l][k][j]: a statistic of the level-k nodes below symbol j of level l (k >= l)."""
        D = self.depth
        stat: list[list[np.ndarray]] = [[None] * (D + 1) for _ in range(D + 1)]  # type: ignore
        for l in range(D, -1, -1):
            stat[l][l] = np.ones(self.sizes[l])
            for k in range(l + 1, D + 1):
                vals = []
                for rs in self.rules[l]:
                    vals.append(reduce_rules([combine(stat[l + 1][k][list(r)]) for r in rs]))
                stat[l][k] = np.asarray(vals, np.float64)
        return stat

    @functools.cached_property
    def max_nodes(self) -> tuple[int, ...]:
        """Exact maximum number of nodes on each level over all derivations (buffer sizes)."""
        stat = self._span_stat(max, np.sum)
        return tuple(int(stat[0][k][0]) for k in range(self.depth + 1))

    @functools.cached_property
    def min_len(self) -> int:
        return int(self._span_stat(min, np.sum)[0][self.depth][0])

    @functools.cached_property
    def expected_len(self) -> float:
        """Exact expected string length under uniform rule choice."""
        return float(self._span_stat(lambda v: float(np.mean(v)), np.sum)[0][self.depth][0])

    @property
    def max_len(self) -> int:
        return self.max_nodes[self.depth]


def grammar_names() -> tuple[str, ...]:
    return tuple(_raw_grammars())


@functools.cache
def _raw_grammars() -> dict:
    return json.loads(_GRAMMAR_FILE.read_text())


def _freeze_rules(rules: list) -> tuple[Rules, ...]:
    return tuple(tuple(tuple(tuple(r) for r in rs) for rs in level) for level in rules)


@functools.cache
def load_grammar(name: str) -> Grammar:
    """Loads a shipped grammar by name; the error lists the known names."""
    raw = _raw_grammars()
    if name not in raw:
        raise ValueError(f"unknown grammar {name!r}; known: {', '.join(raw)}")
    g = raw[name]
    return Grammar(name, g["depth"], g["num_sym"], tuple(g["sizes"]), _freeze_rules(g["rules"]))


def build_random_grammar(
    seed: int,
    *,
    name: str = "random",
    sizes: tuple[int, ...] = (1, 3, 3, 3, 3, 3, 3),
    deg_min: int = 2,
    deg_max: int = 4,
    len_min: int = 2,
    len_max: int = 3,
    disallow_duplicate_sym: bool = False,
) -> Grammar:
    """A new layered grammar with the knobs of the paper's builder (`CFG_Config.build_graph`).

    Rules per NT ~ U{deg_min..deg_max}, rule length ~ U{len_min..len_max}, children uniform on the
    next level; a right-hand side already used anywhere on the same level is redrawn (the official
    `disallow_duplicate_seq`, on for every shipped grammar). Unlike the official builder (global,
    unseeded `random`), the result is a pure function of `seed`.
    """
    if not (1 <= deg_min <= deg_max <= MAX_RULES):
        raise ValueError(f"deg_min={deg_min}, deg_max={deg_max}: need 1<=min<=max<={MAX_RULES}")
    if not (1 <= len_min <= len_max <= MAX_RULE_LEN):
        raise ValueError(f"len_min={len_min}, len_max={len_max}: need 1<=min<=max<={MAX_RULE_LEN}")
    if len(sizes) < 2 or sizes[0] != 1:
        raise ValueError(f"sizes={sizes} must start with 1 (the root) and have >= 2 levels")
    rng = np.random.default_rng(seed)
    depth = len(sizes) - 1
    rules = []
    for l in range(depth):
        seen: set[tuple[int, ...]] = set()
        level = []
        for _ in range(sizes[l]):
            rs = []
            for _ in range(int(rng.integers(deg_min, deg_max + 1))):
                for _attempt in range(10_000):
                    n = int(rng.integers(len_min, len_max + 1))
                    rule = tuple(int(c) for c in rng.integers(0, sizes[l + 1], n))
                    if disallow_duplicate_sym and len(set(rule)) < len(rule):
                        continue
                    if rule not in seen:
                        break
                else:
                    raise ValueError(f"sizes={sizes}: level {l + 1} too small for distinct rules")
                seen.add(rule)
                rs.append(rule)
            level.append(tuple(rs))
        rules.append(tuple(level))
    return Grammar(name, depth, sizes[-1], tuple(sizes), tuple(rules))
