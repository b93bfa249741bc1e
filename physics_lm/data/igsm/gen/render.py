"""Stage 9: rendering a sampled iGSM problem straight to token ids of the shared vocabulary.

Names, sentence order, symbols and constants are drawn here (they are independent of the graph),
then every sentence is written as a fixed number of fragment slots (a word, a name, a number or a
letter; unused slots are empty) and `layout.assemble` packs the row:
``<bos> <problem> P [Q] <solution> S <answer> A <eos> <pad>...`` (the layout of
`Vocab.encode_example`; "qp" puts the question first). Tables come from the vocabulary at
construction time, so the rendered ids equal `vocab.encode(text)` of the official text format
(`text.vocab.host_texts` reads a rendered row back as text).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from physics_lm.data.igsm.gen import rand, streams
from physics_lm.data.igsm.gen.candidate import Template
from physics_lm.data.igsm.gen.layout import FragmentTable, assemble
from physics_lm.data.igsm.gen.plan import Consts, Plan, operands
from physics_lm.data.igsm.gen.structure import NI, SLOT_I, SLOT_J, SLOT_K, SLOT_KIND
from physics_lm.data.igsm.text import names
from physics_lm.data.igsm.text.vocab import Vocab

if TYPE_CHECKING:  # retry.py is a stage before this one; only its output type is named here
    from physics_lm.data.igsm.gen.retry import Backs

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
            "Define", "so", "=", "+", "-", "*", ";", "BACK")}
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
    back_tok_Nx3: jax.Array | None = None  # noqa: N815  retry: "Define", name, "as" positions


def _draw_names(seed, tb: Tables, d, l_D):
    """(item name fragments [4 layers, 4 items], category name fragments [4 layers])."""
    u = rand.uniform(seed, streams.NAMES, 0, 10)
    chain = rand.randint(u[0], 0, 3)
    start = rand.randint(u[1], 0, 4 - d)
    layer = jnp.arange(4)
    cat = chain * 4 + jnp.clip(start + layer, 0, 3)
    pool = rand.randint(u[2:6], 0, 4)
    size = jnp.asarray(tb.sizes)[cat, pool]
    keys = rand.uniform(seed, streams.NAME_ORDER, 0, 4 * POOL_W).reshape(4, POOL_W)
    keys = jnp.where(jnp.arange(POOL_W)[None, :] < size[:, None], keys, 2.0)
    order = rand.sort_order(keys, 4)
    items = jnp.asarray(tb.pools)[cat[:, None], pool[:, None], order]
    return items, jnp.asarray(tb.cat_frag)[cat]


def render(seed, tb: Tables, tpl: Template, cs: Consts, plan: Plan, answer, fmt: str,
           seq_len: int, n_sent: int, backs: Backs | None = None) -> Rendered:
    """Token row of one problem (see module docstring). n_sent: static bound on sentences.

    Every sentence and every solution step is a fixed list of fragment slots; `empty` fills the
    slots a sentence does not use (they have length 0 in the packed row). Retry data (`backs`,
    `retry.py`): each BACK sentence is 7 more slots, merged in front of the first step of the
    solution sentence it precedes (`_merge`)."""
    empty = tb.empty
    word = tb.w  # template word -> token id
    number = jnp.asarray(tb.numbers)  # value 0..22 -> token id
    items, cats = _draw_names(seed, tb, tpl.d, tpl.l_D)
    slot_i, slot_j, slot_k = jnp.asarray(SLOT_I), jnp.asarray(SLOT_J), jnp.asarray(SLOT_K)
    kind = jnp.asarray(SLOT_KIND)

    def owner(slot):  # X of "X's Y"
        return items[slot_i[slot], slot_j[slot]]

    def target(slot):  # Y of "X's Y": item (i+1, k) or category of layer k
        return jnp.where(kind[slot] == 0, items[jnp.minimum(slot_i[slot] + 1, 3), slot_k[slot]],
                         cats[slot_k[slot]])

    # Problem sentences: a uniform permutation of the template's instance parameters.
    in_problem = tpl.tmpl_P[:NI]
    keys = jnp.where(in_problem, rand.uniform(seed, streams.SENTENCE_ORDER, 0, NI), 2.0)
    sent_slot = rand.sort_order(keys, n_sent)  # the instance parameter of each sentence
    sent_real = jnp.arange(n_sent) < jnp.sum(in_problem)
    operand_slots, n_operands, has_rng = operands(tpl.ideps_48x4)
    sent_operands = operand_slots[sent_slot]
    sent_n_operands, sent_has_rng = n_operands[sent_slot], has_rng[sent_slot]
    const, times, diff = cs.c_48[sent_slot], cs.mul_48[sent_slot], cs.diff_48[sent_slot]
    const_tok = number[const]

    def same(tok):  # one token in every sentence
        return jnp.full(n_sent, tok, jnp.int32)

    # "The number of each X's Y equals"
    head = [same(word["The"]), same(word["number"]), same(word["of"]), same(word["each"]),
            owner(sent_slot), same(word["'s"]), target(sent_slot), same(word["equals"])]
    # "c" / "c more than" / "c times as much as"
    has_operand = sent_n_operands > 0
    rng_part = [jnp.where(sent_has_rng, const_tok, empty),
                jnp.where(sent_has_rng & has_operand,
                          jnp.where(times, word["times"], word["more"]), empty),
                jnp.where(sent_has_rng & has_operand,
                          jnp.where(times, word["as"], word["than"]), empty),
                jnp.where(sent_has_rng & has_operand & times, word["much"], empty),
                jnp.where(sent_has_rng & has_operand & times, word["as"], empty)]
    # "the sum of" / "the difference of" (two or more operands)
    many = sent_n_operands >= 2
    sum_part = [jnp.where(many, word["the"], empty),
                jnp.where(many, jnp.where((sent_n_operands == 2) & diff, word["difference"],
                                          word["sum"]), empty),
                jnp.where(many, word["of"], empty)]
    # "each X's Y" per operand, separated by "," and a final "and"
    operand_part = []
    for m in range(4):
        present = m < sent_n_operands
        slot = jnp.maximum(sent_operands[:, m], 0)
        sep = jnp.where(m < sent_n_operands - 1,
                        jnp.where(m == sent_n_operands - 2, word["and"], word[","]), empty)
        operand_part += [jnp.where(present, word["each"], empty),
                         jnp.where(present, owner(slot), empty),
                         jnp.where(present, word["'s"], empty),
                         jnp.where(present, target(slot), empty),
                         jnp.where(present, sep, empty)]
    sentences = jnp.stack(head + rng_part + sum_part + operand_part + [same(word["."])], axis=1)
    sentences = jnp.where(sent_real[:, None], sentences, empty).reshape(-1)
    question_slot = tpl.topo_S[jnp.maximum(tpl.n_sol - 1, 0)]
    question = jnp.stack([word["How"], word["many"], target(question_slot), word["does"],
                          owner(question_slot), word["have"], word["?"]])
    # Solution: step g defines variable g, written with the g-th letter of a random permutation.
    perm = rand.sort_order(rand.uniform(seed, streams.SYMBOLS, 0, 52))
    letter = jnp.asarray(tb.letters)[perm]  # variable -> token id
    step = jnp.arange(plan.valid.shape[0])
    first, n_opnd = plan.first, plan.n_opnd
    defined = jnp.where(plan.final, plan.param_var, step)  # the variable left of the first "="
    sign = jnp.stack([word["+"], word["-"], word["*"]])[plan.sign]
    a_tok = jnp.where(plan.a_var >= 0, letter[jnp.maximum(plan.a_var, 0)], number[plan.a_val])
    b_tok = jnp.where(plan.b_var >= 0, letter[jnp.maximum(plan.b_var, 0)], number[plan.b_val])
    param_slot = plan.slot
    steps = jnp.stack([
        # "Define X's Y as v;" before the parameter's first step
        jnp.where(first, word["Define"], empty), jnp.where(first, owner(param_slot), empty),
        jnp.where(first, word["'s"], empty), jnp.where(first, target(param_slot), empty),
        jnp.where(first, word["as"], empty), jnp.where(first, letter[plan.param_var], empty),
        jnp.where(first, word[";"], empty),
        # "[so] v = a + b = 6 + 2 = 8;" (operands and the middle part as the step needs them)
        jnp.where(plan.final, word["so"], empty), letter[defined], jnp.full_like(step, word["="]),
        jnp.where(n_opnd >= 1, a_tok, empty), jnp.where(n_opnd == 2, sign, empty),
        jnp.where(n_opnd == 2, b_tok, empty),
        jnp.where(n_opnd == 2, word["="], empty), jnp.where(n_opnd == 2, number[plan.a_val], empty),
        jnp.where(n_opnd == 2, sign, empty), jnp.where(n_opnd == 2, number[plan.b_val], empty),
        jnp.where(n_opnd >= 1, word["="], empty), number[plan.res],
        jnp.where(plan.final, word["."], word[";"]),
    ], axis=1)
    steps = jnp.where(plan.valid[:, None], steps, empty)
    step_at = step * STEP_SLOTS  # fragment offset of each step inside the solution
    if backs is None:
        sol, back_at = steps.reshape(-1), None
    else:
        used = backs.slot_N >= 0
        slot = jnp.maximum(backs.slot_N, 0)

        def each(tok):
            return jnp.full(slot.shape, tok, jnp.int32)

        back = jnp.stack([each(word["Define"]), owner(slot), each(word["'s"]), target(slot),
                          each(word["as"]), each(word["BACK"]), each(word["."])], axis=1)
        back = jnp.where(used[:, None], back, empty)
        sol, step_at, back_at = _merge(steps, jnp.where(plan.valid, plan.pos, tpl.topo_S.shape[0]),
                                       back, backs.pos_N, empty)
    vocab = tb.vocab
    prefix = jnp.array([vocab.bos_id, vocab.prob_id])
    problem = [sentences, question] if fmt == "pq" else [question, sentences]
    suffix = jnp.stack([jnp.int32(vocab.ans_id), number[answer], jnp.int32(vocab.eos_id)])
    fragments = jnp.concatenate([prefix, *problem, jnp.array([vocab.sol_id]), sol, suffix])
    tokens, total, starts = assemble(fragments, tb.frags, seq_len, fill=vocab.pad_id)
    n_before_sol = 2 + sentences.shape[0] + question.shape[0]  # fragments before <solution>
    sol_pos = starts[n_before_sol]
    ans_pos = starts[n_before_sol + 1 + sol.shape[0]]
    step_end = starts[n_before_sol + 1 + step_at + STEP_SLOTS - 1]  # its "." or ";"
    S = tpl.topo_S.shape[0]
    rows = jnp.full(S, -1, jnp.int32).at[jnp.where(plan.final, plan.pos, S)].set(
        step_end, mode="drop")
    row_pos = jnp.concatenate([sol_pos[None], rows])
    back_tok = None
    if back_at is not None:  # token positions of "Define", of the name and of "as"
        at = starts[n_before_sol + 1 + back_at[:, None] + jnp.array([0, 1, 4])[None, :]]
        back_tok = jnp.where((backs.slot_N >= 0)[:, None], at, -1)
    return Rendered(tokens, total, sol_pos, ans_pos, row_pos, items, cats, back_tok)


def _merge(steps_GxF, step_pos_G, back_NxK, back_pos_N, empty: int):
    """Interleaves step fragments [G, F] and BACK sentences [N, K] (both in text order: solution
    positions non-decreasing, unused ones last with position S) so that every BACK sentence comes
    before the steps of the solution sentence it precedes. A merge of two sorted lists by ranks,
    without a sort: step g lands after the BACK sentences at positions <= its own, BACK sentence
    j after the steps at positions < its own. Returns (fragments [G*F + N*K], offset of every
    step, offset of every BACK sentence)."""
    G, F = steps_GxF.shape
    N, K = back_NxK.shape
    backs_before = jnp.sum(back_pos_N[None, :] <= step_pos_G[:, None], axis=1)
    steps_before = jnp.sum(step_pos_G[None, :] < back_pos_N[:, None], axis=1)
    step_at = jnp.arange(G) * F + backs_before * K
    back_at = jnp.arange(N) * K + steps_before * F
    out = jnp.full(G * F + N * K, empty, jnp.int32)
    out = out.at[(step_at[:, None] + jnp.arange(F)[None, :]).reshape(-1)].set(
        steps_GxF.reshape(-1), unique_indices=True)
    out = out.at[(back_at[:, None] + jnp.arange(K)[None, :]).reshape(-1)].set(
        back_NxK.reshape(-1), unique_indices=True)
    return out, step_at, back_at
