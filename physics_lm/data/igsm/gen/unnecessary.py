"""Stage 6: the unnecessary parameters of one selected candidate (SPEC §8), pure JAX.

Every structure edge not used by the solution becomes one more problem sentence whose
dependencies are drawn from the already-chosen parameters (or, half of the time, only from the
earlier "independent" unused ones); abstract parameters it references join the template with
their structural closure (`add_param`), and newly determined abstract parameters become
available (`fill_chosen`). Before that, `fill_all` makes available the abstract parameters that
the necessary ones already determine. One candidate, no batch axis; `add_unused` is the stage.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from physics_lm.data.igsm.gen import rand, streams
from physics_lm.data.igsm.gen.candidate import Candidate, Template
from physics_lm.data.igsm.gen.structure import (
    ABS_CHILD_INST,
    NA,
    NI,
    NP,
    RNG,
    Record,
    abs_children,
    closure,
)


def _fill_scan(inter, chosen, G, d, l_D, edge_ch, uppers, lower_min):
    """The stamp-quirk scan shared by `fill_all` (loop 2) and `fill_chosen` (upper layers).

    uppers: list of (static upper, bool active); lower_min: dynamic first `lower`.
    """
    for upper, active in uppers:
        alive = active
        for lower in range(upper + 2, 4):
            for j in range(4):
                on = alive & (lower < d) & (lower >= lower_min) & (j < l_D[upper])
                cond = on & ~inter[upper * 16 + j * 4 + upper + 1]
                low = jnp.array([(upper + 1) * 16 + x * 4 + lower for x in range(4)])
                blocked = cond & jnp.any(G[upper, j] & inter[low])
                alive = alive & ~blocked
                tgt = upper * 16 + j * 4 + lower
                mv = cond & ~blocked & inter[tgt]
                inter = inter.at[tgt].set(inter[tgt] & ~mv)
                chosen = chosen.at[NI + tgt].set(chosen[NI + tgt] | mv)
    return inter, chosen


def _fill_all(rec: Record, G, d, l_D):
    """`fill_all`: abstract params fully determined by chosen edges become available."""
    edge_ch = rec.chosen_P[:NI]
    i, j, k = np.arange(NA) // 16, (np.arange(NA) // 4) % 4, np.arange(NA) % 4
    kids = abs_children(G)
    done = jnp.all(~kids | edge_ch[jnp.asarray(ABS_CHILD_INST)], axis=1)
    mv = rec.inter_A & jnp.asarray(k == i + 1) & done & jnp.asarray(i < 3) & (jnp.asarray(j) >= 0)
    inter = rec.inter_A & ~mv
    chosen = rec.chosen_P.at[NI:NI + NA].set(rec.chosen_P[NI:NI + NA] | mv)
    inter, chosen = _fill_scan(inter, chosen, G, d, l_D, edge_ch,
                               [(u, u < d - 1) for u in range(2)], 0)
    return rec._replace(inter_A=inter, chosen_P=chosen)


def _fill_chosen(inter, chosen, G, d, l_D, slot):
    """`fill_chosen(param)` after the unused instance parameter `slot` = I(i, j, k) joins."""
    i, j = slot // 16, (slot // 4) % 4
    ar = jnp.arange(NA)
    edge_ch = chosen[:NI]
    kids = jnp.any(G[:, :, :] & ((jnp.arange(3)[:, None] == i) & (jnp.arange(4)[None, :] == j))
                   [:, :, None], axis=(0, 1))
    all_done = jnp.all(~kids | edge_ch[i * 16 + j * 4 + jnp.arange(4)])

    def move(inter, chosen, tgt, m):
        hit = (ar == tgt) & m
        return inter & ~hit, chosen | jnp.concatenate([jnp.zeros(NI, jnp.bool_), hit,
                                                       jnp.zeros(1, jnp.bool_)])

    inter, chosen = move(inter, chosen, i * 16 + j * 4 + i + 1, all_done)
    alive = all_done
    for lower in range(2, 4):
        on = alive & (lower >= i + 2) & (lower < d)
        low = jnp.clip((i + 1) * 16 + jnp.arange(4) * 4 + lower, 0, NA - 1)
        blocked = on & jnp.any(kids & inter[low])
        alive = alive & ~blocked
        inter, chosen = move(inter, chosen, i * 16 + j * 4 + lower, on & ~blocked)
    return _fill_scan(inter, chosen, G, d, l_D, edge_ch,
                      [(u, all_done & (u <= i - 1)) for u in (2, 1, 0)], i + 1)


def design_unused(seed, rec: Record, tmpl_P, ideps_48x4, G, d, l_D):
    """Adds every remaining edge as an unnecessary instance parameter.

    Returns (tmpl_P, ideps_48x4) with the unused parameters and the abstract parameters they pull
    into the template.
    """
    slots = jnp.arange(NP)
    inst_rows = jnp.arange(NI)

    def cond(c):
        return jnp.any(c[0].remain_I)

    def body(c):
        rec, indep, tmpl, ideps, t = c
        u_ = rand.uniform(seed, streams.UNNECESSARY, t, NI + NP + 6)
        u = rand.choice(u_[:NI], rec.remain_I)
        is_indep = u_[NI + NP] < 0.5
        pool = jnp.where(is_indep, indep, rec.chosen_P)
        n = jnp.sum(pool)
        max_all = n + 1
        coins = (u_[NI + NP + 1:NI + NP + 4] > 0.5).astype(jnp.int32)
        n_sample = jnp.minimum(1 + jnp.sum(jnp.cumprod(coins)), jnp.minimum(max_all, 4))
        full = n_sample == max_all
        rng = full | (u_[NI + NP + 4] < 0.5)
        ns = jnp.where(full, n, n_sample - rng.astype(jnp.int32))
        r = u_[NI:NI + NP]
        okey = jnp.where(full, (rec.rank_P * 128 + slots).astype(jnp.float32), r)
        okey = jnp.where(pool, okey, jnp.inf)
        order, kq = rand.smallest_k(okey, 4)
        sel = (jnp.arange(4) < ns) & (kq < jnp.inf)
        deps = jnp.where(sel, order, -1)
        deps = jnp.where(rng, jnp.concatenate([jnp.array([RNG]), deps[:3]]), deps)
        ideps = jnp.where((inst_rows == u)[:, None], deps[None, :], ideps)
        # add_param: referenced abstract params not yet in the template join with their closure.
        ref = jnp.any((deps[:, None] == slots[None, :]) & (deps[:, None] >= 0), axis=0)
        gate = ~tmpl[NI:NI + NA]
        clo = closure(ref[NI:NI + NA] & gate, gate, G)
        hot = slots == u
        tmpl = tmpl | hot | jnp.concatenate([jnp.zeros(NI, jnp.bool_), clo,
                                             jnp.zeros(1, jnp.bool_)])
        inter, chosen = _fill_chosen(rec.inter_A, rec.chosen_P | hot, G, d, l_D, u)
        newly = chosen & ~rec.chosen_P
        rank = jnp.where(newly, rec.counter, rec.rank_P)
        rec = Record(rec.remain_I & ~hot[:NI], inter, chosen, rank, rec.counter + 1)
        return rec, indep | (hot & is_indep), tmpl, ideps, t + 1

    init = (rec, jnp.zeros(NP, jnp.bool_), tmpl_P, ideps_48x4, jnp.int32(0))
    _, _, tmpl, ideps, _ = jax.lax.while_loop(cond, body, init)
    return tmpl, ideps


def add_unused(c: Candidate) -> Template:
    """`fill_all` + `design_unused` for one selected candidate: the full problem template."""
    t = c.tpl
    rec = _fill_all(c.rec, t.G_3x4x4, t.d, t.l_D)
    tmpl, ideps = design_unused(c.seed, rec, t.tmpl_P, t.ideps_48x4, t.G_3x4x4, t.d, t.l_D)
    return t._replace(tmpl_P=tmpl, ideps_48x4=ideps)
