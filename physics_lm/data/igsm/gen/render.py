"""Rendering sampled iGSM problems straight to token ids of the shared vocabulary, jittable.

Names, sentence order, symbols and constants are drawn here (they are independent of the graph),
then every sentence is written as a fixed number of fragment slots (a word, a name, a number or a
letter; unused slots are empty) and `layout.assemble` packs the row:
``<bos> <problem> P [Q] <solution> S <answer> A <eos> <pad>...`` (the layout of
`Vocab.encode_example`; "qp" puts the question first). Tables come from the vocabulary at
construction time, so the rendered ids equal `vocab.encode(text)` of the official text format.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from physics_lm.data.igsm.gen import rand
from physics_lm.data.igsm.gen.layout import FragmentTable, assemble
from physics_lm.data.igsm.gen.plan import Consts, Plan, operands
from physics_lm.data.igsm.gen.structure import NI, SLOT_I, SLOT_J, SLOT_K, SLOT_KIND
from physics_lm.data.igsm.gen.template import Template
from physics_lm.data.igsm.text import names
from physics_lm.data.igsm.text.vocab import Vocab

STEP_SLOTS = 20
POOL_W = 20


class Tables:
    """Host-built fragment table: every vocabulary id (length 1), then every name."""

    def __init__(self, vocab: Vocab) -> None:
        self.vocab = vocab
        item_names = sorted(names.all_item_names())
        all_names = item_names + list(names.CATEGORIES)
        V = vocab.size
        rows = [[i] for i in range(V)] + [vocab.encode_name(n) for n in all_names] + [[]]
        self.frags = FragmentTable(rows)
        self.empty = len(rows) - 1
        name_frag = {n: V + i for i, n in enumerate(item_names)}
        self.cat_frag = np.array([V + len(item_names) + i for i in range(16)], np.int32)
        pools = np.zeros((16, 5, POOL_W), np.int32)
        sizes = np.zeros((16, 5), np.int32)
        for c, cat in enumerate(names.CATEGORIES):
            for p, pool in enumerate(names.POOLS[cat]):
                sizes[c, p] = len(pool)
                pools[c, p, : len(pool)] = [name_frag[n] for n in pool]
        self.pools, self.sizes = pools, sizes
        self.frag_names = all_names
        self.w = {w: vocab.word_to_id(w) for w in (
            "The", "number", "of", "each", "equals", "more", "than", "times", "as", "much", "the",
            "sum", "difference", "and", ",", ".", "How", "many", "does", "have", "?", "'s",
            "Define", "so", "=", "+", "-", "*", ";")}
        self.numbers = np.array(vocab.number_ids, np.int32)
        self.letters = np.array(vocab.letter_ids, np.int32)


class Rendered(NamedTuple):
    """One rendered row; row_pos_S1: probe rows (<solution>, then each sentence's ".")."""

    tokens: jax.Array  # int32[T]
    length: jax.Array  # untruncated length
    sol_pos: jax.Array  # position of the <solution> token
    ans_pos: jax.Array  # position of the <answer> token
    row_pos_S1: jax.Array  # noqa: N815
    item_frag_4x4: jax.Array
    cat_frag_4: jax.Array


def _draw_names(seed, tb: Tables, d, l_D):
    u = rand.uniform(seed, 50, 0, 10)
    chain = rand.randint(u[0], 0, 3)
    start = rand.randint(u[1], 0, 4 - d)
    layer = jnp.arange(4)
    cat = chain * 4 + jnp.clip(start + layer, 0, 3)
    pool = rand.randint(u[2:6], 0, 4)
    size = jnp.asarray(tb.sizes)[cat, pool]
    keys = rand.uniform(seed, 51, 0, 4 * POOL_W).reshape(4, POOL_W)
    keys = jnp.where(jnp.arange(POOL_W)[None, :] < size[:, None], keys, 2.0)
    order = rand.sort_order(keys, 4)
    items = jnp.asarray(tb.pools)[cat[:, None], pool[:, None], order]
    return items, jnp.asarray(tb.cat_frag)[cat]


def render(seed, tb: Tables, tpl: Template, cs: Consts, plan: Plan, answer, fmt: str,
           seq_len: int, n_sent: int) -> Rendered:
    """Token row of one problem (see module docstring). n_sent: static bound on sentences."""
    E = tb.empty
    w = tb.w
    num = jnp.asarray(tb.numbers)
    items, cats = _draw_names(seed, tb, tpl.d, tpl.l_D)
    si, sj, sk = jnp.asarray(SLOT_I), jnp.asarray(SLOT_J), jnp.asarray(SLOT_K)
    kind = jnp.asarray(SLOT_KIND)

    def owner(slot):  # X of "X's Y"
        return items[si[slot], sj[slot]]

    def target(slot):  # Y of "X's Y": item (i+1, k) or category of layer k
        return jnp.where(kind[slot] == 0, items[jnp.minimum(si[slot] + 1, 3), sk[slot]],
                         cats[sk[slot]])

    # sentence order: a uniform permutation of the template's instance parameters
    sent_mask = tpl.tmpl_P[:NI]
    keys = jnp.where(sent_mask, rand.uniform(seed, 52, 0, NI), 2.0)
    order = rand.sort_order(keys, n_sent)
    s_ok = jnp.arange(n_sent) < jnp.sum(sent_mask)
    opnd, q, rng = operands(tpl.ideps_48x4)
    o, qq, rg = opnd[order], q[order], rng[order]
    c, mul, dif = cs.c_48[order], cs.mul_48[order], cs.diff_48[order]
    cn = num[c]
    Ee = jnp.full_like(order, E)
    head = [Ee * 0 + w["The"], Ee * 0 + w["number"], Ee * 0 + w["of"], Ee * 0 + w["each"],
            owner(order), Ee * 0 + w["'s"],
            target(order), Ee * 0 + w["equals"]]
    has_x = qq > 0
    mod = [jnp.where(rg, cn, E),
           jnp.where(rg & has_x, jnp.where(mul, w["times"], w["more"]), E),
           jnp.where(rg & has_x, jnp.where(mul, w["as"], w["than"]), E),
           jnp.where(rg & has_x & mul, w["much"], E),
           jnp.where(rg & has_x & mul, w["as"], E)]
    the = [jnp.where(qq >= 2, w["the"], E),
           jnp.where(qq >= 2, jnp.where((qq == 2) & dif, w["difference"], w["sum"]), E),
           jnp.where(qq >= 2, w["of"], E)]
    ops = []
    for m in range(4):
        on = m < qq
        sl = jnp.maximum(o[:, m], 0)
        sep = jnp.where(m < qq - 1, jnp.where(m == qq - 2, w["and"], w[","]), E)
        ops += [jnp.where(on, w["each"], E), jnp.where(on, owner(sl), E),
                jnp.where(on, w["'s"], E), jnp.where(on, target(sl), E), jnp.where(on, sep, E)]
    sent = jnp.stack(head + mod + the + ops + [Ee * 0 + w["."]], axis=1)
    sent = jnp.where(s_ok[:, None], sent, E).reshape(-1)
    qslot = tpl.topo_S[jnp.maximum(tpl.n_sol - 1, 0)]
    ques = jnp.stack([w["How"], w["many"], target(qslot), w["does"], owner(qslot), w["have"],
                      w["?"]])
    # solution
    perm = rand.sort_order(rand.uniform(seed, 53, 0, 52))
    let = jnp.asarray(tb.letters)[perm]
    g = jnp.arange(plan.valid.shape[0])
    first, n = plan.first, plan.n_opnd
    own = jnp.where(plan.final, plan.param_var, g)
    sign = jnp.stack([w["+"], w["-"], w["*"]])[plan.sign]
    a = jnp.where(plan.a_var >= 0, let[jnp.maximum(plan.a_var, 0)], num[plan.a_val])
    b = jnp.where(plan.b_var >= 0, let[jnp.maximum(plan.b_var, 0)], num[plan.b_val])
    pslot = plan.slot
    steps = jnp.stack([
        jnp.where(first, w["Define"], E), jnp.where(first, owner(pslot), E),
        jnp.where(first, w["'s"], E), jnp.where(first, target(pslot), E),
        jnp.where(first, w["as"], E), jnp.where(first, let[plan.param_var], E),
        jnp.where(first, w[";"], E),
        jnp.where(plan.final, w["so"], E), let[own], jnp.full_like(g, w["="]),
        jnp.where(n >= 1, a, E), jnp.where(n == 2, sign, E), jnp.where(n == 2, b, E),
        jnp.where(n == 2, w["="], E), jnp.where(n == 2, num[plan.a_val], E),
        jnp.where(n == 2, sign, E), jnp.where(n == 2, num[plan.b_val], E),
        jnp.where(n >= 1, w["="], E), num[plan.res], jnp.where(plan.final, w["."], w[";"]),
    ], axis=1)
    steps = jnp.where(plan.valid[:, None], steps, E).reshape(-1)
    v = tb.vocab
    pre = jnp.array([v.bos_id, v.prob_id])
    body = [sent, ques] if fmt == "pq" else [ques, sent]
    tail = jnp.stack([jnp.int32(v.ans_id), num[answer], jnp.int32(v.eos_id)])
    seg = jnp.concatenate([pre, *body, jnp.array([v.sol_id]), steps, tail])
    tokens, total, starts = assemble(seg, tb.frags, seq_len, fill=v.pad_id)
    n_pre = 2 + sent.shape[0] + ques.shape[0]
    sol_pos = starts[n_pre]
    ans_pos = starts[n_pre + 1 + steps.shape[0]]
    term = starts[n_pre + 1 + jnp.arange(plan.valid.shape[0]) * STEP_SLOTS + STEP_SLOTS - 1]
    S = tpl.topo_S.shape[0]
    rows = jnp.full(S, -1, jnp.int32).at[jnp.where(plan.final, plan.pos, S)].set(
        term, mode="drop")
    row_pos = jnp.concatenate([sol_pos[None], rows])
    return Rendered(tokens, total, sol_pos, ans_pos, row_pos, items, cats)


def host_texts(vocab: Vocab, tokens: np.ndarray) -> tuple[str, str, str, str]:
    """(problem, question, solution, answer) texts of one rendered row (host side)."""
    problem, solution, answer = vocab.split_example(tokens)
    if problem is None or solution is None or answer is None:
        raise ValueError("row is truncated: raise seq_len")
    if problem.startswith("How many "):
        question = problem.split("? ", 1)[0] + "?"
    else:
        question = problem.rsplit(". ", 1)[-1]
    return problem, question, solution, answer

