"""Host-side reference sampler and label logic, seed-exact with the official generator.

`sample_reference(grammar, seed)` makes exactly the official `rng.randint(0, n - 1)` calls, one per
NT in depth-first left-to-right pre-order (SPEC §2.1), on `random.Random(seed)`, so it reproduces
`generate_onedata(random.Random(seed))` string for string, with the official counter-based labels.
It is the ground truth the jitted sampler (sampler.py) is tested against: both produce a
level-by-level tree (`HostTree`), and `labels_from_tree` turns either into labels.

Label layout everywhere here: `anc[l][i]` / `bnd[l][i]` for levels l = 0..D-1 (root first), as in
`samples_public.jsonl`; ancestors are local class indices unless a name says global.
"""

from __future__ import annotations

import random
from typing import NamedTuple

import numpy as np

from physics_lm.data.cfg.grammar import Grammar


class HostTree(NamedTuple):
    """A derivation stored level by level (numpy / lists, unbatched).

    Attributes:
      sym: D + 1 int arrays; sym[l][k] = local symbol of the k-th node (left to right) of level l.
      parent: D + 1 int arrays; parent[l][k] = index of its parent on level l - 1 (level 0: [0]).
    """

    sym: list[np.ndarray]
    parent: list[np.ndarray]


class RefSample(NamedTuple):
    """One official string with the generator's own annotation (SPEC §2.2-2.3).

    Attributes:
      tokens: terminal ids 1..num_sym.
      nt_ancestor: D lists of global ids (level 0 = root).
      nt_boundary: D lists of 0/1.
      tree: the same derivation as a HostTree.
    """

    tokens: list[int]
    nt_ancestor: list[list[int]]
    nt_boundary: list[list[int]]
    tree: HostTree


def sample_reference(grammar: Grammar, seed: int) -> RefSample:
    """The official string for `seed`, labelled from per-level node counters like the generator.

    Why counters and not the tree: the counter path is the official definition of the labels;
    keeping it separate from `labels_from_tree` lets tests check one against the other.
    """
    rng = random.Random(seed)
    D = grammar.depth
    sym: list[list[int]] = [[] for _ in range(D + 1)]
    parent: list[list[int]] = [[] for _ in range(D + 1)]
    rows: list[list[tuple[int, int]]] = []  # per token: (global id, node counter) for levels 0..D-1

    def visit(lv: int, j: int, par: int, above: list[tuple[int, int]]) -> None:
        k = len(sym[lv])  # the official counter minus 2: this node's index on its level
        sym[lv].append(j)
        parent[lv].append(par)
        if lv == D:
            rows.append(above)
            return
        rs = grammar.rules[lv][j]
        me = [*above, (grammar.global_id(lv, j), k)]
        for c in rs[rng.randint(0, len(rs) - 1)]:
            visit(lv + 1, c, k, me)

    visit(0, 0, 0, [])
    n = len(rows)
    anc = [[rows[i][lv][0] for i in range(n)] for lv in range(D)]
    bnd = [
        [int(i == n - 1 or rows[i][lv][1] != rows[i + 1][lv][1]) for i in range(n)]
        for lv in range(D)
    ]
    tree = HostTree([np.asarray(s) for s in sym], [np.asarray(p) for p in parent])
    return RefSample([s + 1 for s in sym[D]], anc, bnd, tree)


def labels_from_tree(tree: HostTree) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Tokens and labels of a level-by-level tree.

    Returns:
      (tokens_L, anc_DxL local classes, bnd_DxL 0/1), using the SPEC §2.3 definitions.
    """
    D = len(tree.sym) - 1
    L = len(tree.sym[D])
    node_L = np.arange(L)
    anc, bnd = [], []
    for lv in range(D - 1, -1, -1):
        node_L = np.asarray(tree.parent[lv + 1])[node_L]
        anc.append(np.asarray(tree.sym[lv])[node_L])
        bnd.append(np.append(node_L[1:] != node_L[:-1], True).astype(np.int64))
    return np.asarray(tree.sym[D]) + 1, np.stack(anc[::-1]), np.stack(bnd[::-1])


def global_ancestors(grammar: Grammar, anc_DxL: np.ndarray) -> np.ndarray:
    """Local ancestor classes -> official global ids (the layout of samples_public.jsonl)."""
    base_D = np.asarray([grammar.global_id(lv, 0) for lv in range(grammar.depth)])
    return np.asarray(anc_DxL) + base_D[:, None]


def tree_from_labels(tokens: np.ndarray, anc_DxL: np.ndarray, bnd_DxL: np.ndarray) -> HostTree:
    """Rebuilds the derivation from tokens and labels (the demo1 lemma, SPEC §2.2).

    Raises:
      ValueError: if the labels are inconsistent (a node's ancestor changes inside its span, or
        boundaries do not nest), so a test can tell bad labels from a bad grammar.
    """
    tokens = np.asarray(tokens)
    anc_DxL, bnd_DxL = np.asarray(anc_DxL), np.asarray(bnd_DxL)
    D, L = anc_DxL.shape
    if L == 0 or not np.all(bnd_DxL[:, -1] == 1):
        raise ValueError("every level must end a node at the last token")
    if np.any(bnd_DxL[:-1] > bnd_DxL[1:]):
        raise ValueError("boundaries do not nest: bnd[l]=1 must imply bnd[l+1]=1")
    sym: list[np.ndarray] = []
    parent: list[np.ndarray] = []
    prev_node_L = np.zeros(L, np.int64)
    for lv in range(D):
        node_L = np.concatenate([[0], np.cumsum(bnd_DxL[lv, :-1])])
        ends = np.flatnonzero(bnd_DxL[lv])
        if np.any(anc_DxL[lv] != anc_DxL[lv][ends][node_L]):
            raise ValueError(f"level {lv}: ancestor class changes inside a node's span")
        sym.append(anc_DxL[lv][ends])
        parent.append(prev_node_L[ends])
        prev_node_L = node_L
    sym.append(tokens - 1)
    parent.append(prev_node_L)
    return HostTree(sym, parent)


def tree_rules(grammar: Grammar, tree: HostTree) -> list[list[tuple[int, int]]]:
    """(symbol, rule index) of every NT node, per level; raises if a node uses no grammar rule."""
    out = []
    for lv in range(grammar.depth):
        n_nodes = len(tree.sym[lv])
        kids = [[] for _ in range(n_nodes)]
        for c, p in zip(tree.sym[lv + 1], tree.parent[lv + 1], strict=True):
            kids[int(p)].append(int(c))
        level = []
        for k in range(n_nodes):
            j = int(tree.sym[lv][k])
            rhs = tuple(kids[k])
            if rhs not in grammar.rules[lv][j]:
                raise ValueError(f"level {lv} node {k}: {j} -> {rhs} is not a rule of the grammar")
            level.append((j, grammar.rules[lv][j].index(rhs)))
        out.append(level)
    return out
