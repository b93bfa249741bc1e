"""Unnecessary parameters of one iGSM candidate (official `design_unused`, SPEC §8), pure JAX.

Every structure edge not used by the solution becomes one more problem sentence whose
dependencies are drawn from the already-chosen parameters (or, half of the time, only from the
earlier "independent" unused ones); abstract parameters it references join the template with
their structural closure (`add_param`), and newly determined abstract parameters become
available (`fill_chosen`). One candidate, no batch axis.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from physics_lm.data.igsm.gen import rand
from physics_lm.data.igsm.gen.structure import NA, NI, NP, RNG, Record, closure
from physics_lm.data.igsm.gen.template import _fill_chosen


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
        u_ = rand.uniform(seed, 11, t, NI + NP + 6)
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
