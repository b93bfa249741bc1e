"""The on-device iGSM problem sampler: `sample(key, batch_size, cfg)`, pure and jittable.

How the official rejection loops are expressed with static shapes (SPEC §2):
  * the target op of every output row is drawn first (light: min of two uniform draws, so
    P(op = k) = (2(M-k)+1)/M^2; or fixed);
  * candidates (complete outer attempts, `candidate.py`) are drawn in pools of B/2 per round
    (`SamplerConfig.pool_size`); a candidate is acceptable if its sort succeeded and (when a
    split is asked) its template bin is allowed;
  * matching: the n-th row (in row order) that still needs op k takes the n-th acceptable
    candidate (in pool order) whose op is k. Each row therefore receives the first acceptable
    candidate of its op from an i.i.d. candidate stream -- exactly the conditional distribution
    the official loop produces (redraw everything until op = target and bin ok) -- but a
    candidate rejected for one row's op can serve another row instead of being thrown away;
  * rounds repeat (bounded `while_loop`) until every row is filled; rows still empty after
    MAX_ROUNDS (never observed) are flagged `valid = 0` and get a zero loss mask.
The waste (candidates drawn per accepted problem) is returned in `stats` and measured by the
benchmark.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp

from physics_lm.data.igsm import rand
from physics_lm.data.igsm.candidate import add_unused, candidates
from physics_lm.data.igsm.probes import probe_labels
from physics_lm.data.igsm.render import Rendered, Tables, render
from physics_lm.data.igsm.steps import compute_values, draw_consts, plan_solution
from physics_lm.data.igsm.structure import NI
from physics_lm.data.igsm.template_hash import N_BINS, max_sketch_bytes, template_bin

MAX_ROUNDS = 64
PRESETS = {"med": (15, 20), "hard": (21, 28)}


@dataclasses.dataclass(frozen=True)
class SamplerConfig:
    """Static description of what to sample (hashable: it is closed over by jit)."""

    max_op: int = 15
    max_edge: int = 20
    op: int | None = None  # fixed op (OOD sets), else the light distribution
    fmt: str = "pq"
    bins: tuple[int, ...] | None = None  # allowed template bins; None = all 23 (no hashing)
    seq_len: int = 768
    pool: int = 0  # candidates per round; 0 = automatic (B/2 / allowed-bin share)
    with_probes: bool = False

    @property
    def n_steps(self) -> int:
        """Static bound on the op of any produced problem (= solution steps)."""
        return self.op if self.op is not None else self.max_op

    @property
    def smax(self) -> int:
        """Static bound on solution parameters (each costs >= 1 op) plus slack."""
        return self.n_steps + 2

    def pool_size(self, batch_size: int) -> int:
        """Candidates drawn per round.

        Why half the batch: candidate ops follow the target distribution within ~20 %
        (measured), so ~3 rounds fill all but a few rows of rare high ops and the last rounds
        waste at most half a batch each: ~2 candidates per problem in all, as few as a big
        first round plus small later ones, with one copy of the candidate program (compile
        time). Divided by the share of allowed template bins (hash bins are ~uniform)."""
        if self.pool:
            return self.pool
        share = 1.0 if self.bins is None else len(self.bins) / N_BINS
        return max(64, -(-int(batch_size * 0.5 / share) // 64) * 64)


def _targets(seed: jax.Array, batch_size: int, cfg: SamplerConfig) -> jax.Array:
    if cfg.op is not None:
        return jnp.full(batch_size, cfg.op, jnp.int32)
    u = rand.uniform(seed, 70, 0, 2 * batch_size).reshape(2, batch_size)
    return jnp.minimum(rand.randint(u[0], 1, cfg.max_op), rand.randint(u[1], 1, cfg.max_op))


def _bins_of(tpl, seeds, cfg: SamplerConfig) -> jax.Array:
    """Template bin of every candidate. The signs of the solution steps (sum or difference,
    "more than" or "times") are part of the sketch, so the sentence constants are drawn from the
    candidate's own seed here and again, identically, when the selected rows are rendered."""

    def one(t, seed):
        zeros = jnp.zeros(97, jnp.int32)  # values are written as "0" in the sketch anyway
        plan = plan_solution(t, draw_consts(seed), zeros, cfg.n_steps)
        return template_bin(plan, max_sketch_bytes(cfg.n_steps))

    return jax.vmap(one)(tpl, seeds)


def _n_mentioned(t) -> jax.Array:
    """Parameters the texts mention (statements + abstract ones used by a statement or the
    solution): the reference corpora's `params` count, which omits abstract parameters that
    only enter the template as the structural closure of another one."""
    slots = jnp.arange(97)
    used = jnp.any(t.ideps_48x4.reshape(-1)[:, None] == slots[None, :], axis=0)
    used = used | jnp.any(t.topo_S[:, None] == slots[None, :], axis=0)
    return jnp.sum(t.tmpl_P[:NI]) + jnp.sum(used[NI:96] & t.tmpl_P[NI:96])


def select(key: jax.Array, batch_size: int, cfg: SamplerConfig):
    """Draws templates for `batch_size` rows.

    Returns (Template [B], candidate seeds [B], filled [B], stats)."""
    cand, filled, stats = _select_candidates(key, batch_size, cfg)
    return jax.vmap(add_unused)(cand), cand.seed, filled, stats


def _select_candidates(key: jax.Array, batch_size: int, cfg: SamplerConfig):
    seed = rand.seed_of(key)
    tgt = _targets(seed, batch_size, cfg)
    C = cfg.pool_size(batch_size)
    K = cfg.n_steps + 2  # op buckets; K-1 = "not acceptable"

    def draw(r):
        seeds = rand.bits(rand.sub_seed(seed, 71, r), 72, 0, C)
        cand, tries, exhausted = candidates(seeds, cfg.max_op, cfg.max_edge, cfg.op, cfg.smax)
        acc = cand.tpl.ok & (cand.tpl.op <= cfg.n_steps)
        if cfg.bins is not None:
            b = _bins_of(cand.tpl, cand.seed, cfg)
            acc = acc & jnp.any(b[:, None] == jnp.asarray(cfg.bins)[None, :], axis=1)
        return cand, acc, jnp.sum(tries), exhausted

    def fill(state, r):
        out, filled, stats = state
        tpl, acc, tries, exhausted = draw(r)
        op_c = jnp.where(acc, tpl.tpl.op, K - 1)
        order = jnp.argsort(op_c * C + jnp.arange(C))
        count = jnp.sum(op_c[:, None] == jnp.arange(K)[None, :], axis=0)
        start = jnp.cumsum(count) - count
        need = ~filled
        hot = need[:, None] & (tgt[:, None] == jnp.arange(K)[None, :])
        rank = jnp.sum(jnp.where(hot, jnp.cumsum(hot, axis=0), 0), axis=1) - 1
        match = need & (rank < count[tgt]) & (rank >= 0)
        cidx = order[jnp.clip(start[tgt] + rank, 0, C - 1)]
        out = jax.tree.map(
            lambda o, t: jnp.where(match.reshape((-1,) + (1,) * (o.ndim - 1)), t[cidx], o),
            out, tpl)
        stats = {"candidates": stats["candidates"] + C, "inner_tries": stats["inner_tries"] + tries,
                 "acceptable": stats["acceptable"] + jnp.sum(acc),
                 "inner_exhausted": stats["inner_exhausted"] + exhausted, "rounds": r + 1}
        return out, filled | match, stats

    out0, _, _, _ = jax.eval_shape(draw, 0)
    out0 = jax.tree.map(lambda s: jnp.zeros((batch_size, *s.shape[1:]), s.dtype), out0)
    stats0 = {k: jnp.int32(0) for k in ("candidates", "inner_tries", "acceptable",
                                        "inner_exhausted", "rounds")}

    def cond(c):
        return jnp.any(~c[1]) & (c[3] < MAX_ROUNDS)

    def body(c):
        out, filled, stats, r = c
        out, filled, stats = fill((out, filled, stats), r)
        return out, filled, stats, r + 1

    out, filled, stats, _ = jax.lax.while_loop(
        cond, body, (out0, jnp.zeros(batch_size, jnp.bool_), stats0, jnp.int32(0)))
    return out, filled, stats


def sample_arrays(key: jax.Array, batch_size: int, cfg: SamplerConfig,
                  tables: Tables) -> dict[str, Any]:
    """Everything about a batch: tokens [B, T], lengths, positions and labels (dict of arrays)."""
    tpl, cand_seeds, filled, stats = select(key, batch_size, cfg)
    seeds = rand.bits(rand.seed_of(jax.random.fold_in(key, 1)), 73, 0, batch_size)

    def one(seed, cseed, t):
        cs = draw_consts(cseed)
        val, vok = compute_values(t, cs)
        plan = plan_solution(t, cs, val, cfg.n_steps)
        qslot = t.topo_S[jnp.maximum(t.n_sol - 1, 0)]
        answer = val[qslot]
        rd: Rendered = render(seed, tables, t, cs, plan, answer, cfg.fmt, cfg.seq_len,
                              cfg.max_edge)
        out = {
            "tokens": rd.tokens, "length": rd.length, "sol_pos": rd.sol_pos, "ans_pos": rd.ans_pos,
            "row_pos": rd.row_pos_S1, "op": t.op, "n_solution_params": t.n_sol,
            "question_kind": (qslot >= NI).astype(jnp.int32), "answer": answer,
            "template_bin": template_bin(plan, max_sketch_bytes(cfg.n_steps)),
            "depth": t.d, "n_sentences": jnp.sum(t.G_3x4x4),
            "n_template_params": jnp.sum(t.tmpl_P), "values_ok": vok,
            "n_mentioned_params": _n_mentioned(t),
            "steps_ok": jnp.all(~plan.valid | ~plan.final | (plan.res == val[plan.slot])),
        }
        if cfg.with_probes:
            out.update(probe_labels(t, val))
        return out

    res = jax.vmap(one)(seeds, cand_seeds, tpl)
    res["valid"] = filled & res["values_ok"] & res["steps_ok"]
    res["stats"] = stats
    res["template"] = tpl
    return res
