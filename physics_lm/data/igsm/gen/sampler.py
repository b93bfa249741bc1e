"""The driver of the on-device iGSM sampler: `sample_arrays(key, batch_size, cfg, tables)`.

Pure and jittable. It selects candidates for the rows, then runs the per-row stages (unnecessary
parameters, plan, render, probe arrays) and the template hash; the package docstring lists the
stages in order. How the official rejection loops are expressed with static shapes (SPEC §2):
  * the target op of every output row is drawn first (`hyper.target_ops`: light, the min of two
    uniform draws, so P(op = k) = (2(M-k)+1)/M^2; or fixed);
  * candidates (complete outer attempts, `candidate.py`) are drawn in rounds of C = B/8 lanes
    (64..256, `SamplerConfig.pool_size`); a candidate is acceptable if its sort succeeded and
    (when a split is asked) its template bin is allowed;
  * matching: the n-th row (in row order) that still needs op k takes the n-th acceptable
    candidate (in lane order) whose op is k. Each row therefore receives the first acceptable
    candidate of its op from an i.i.d. candidate stream -- exactly the conditional distribution
    the official loop produces (redraw everything until op = target and bin ok) -- but a
    candidate rejected for one row's op can serve another row instead of being thrown away;
  * rounds repeat (bounded `while_loop`) until every row is filled. Once fewer rows are missing
    than a round has lanes, each lane serves one missing row and draws its op budget s
    conditioned on s >= that row's op (`draw_hyper(s_min=...)`), and a lane may only serve ops
    >= its s_min. Exact, because a candidate's op never exceeds its budget (op <= s, tested): a
    candidate of op k drawn under s >= j (j <= k) is distributed as an unconditioned candidate
    of op k. Without it the rare high ops (P(op = 15) = 0.4 % for med) cost several
    near-useless rounds. Rows still empty after `max_rounds` (never observed) are flagged
    `valid = 0` and get a zero loss mask.
The waste (candidates drawn per accepted problem) is returned in `stats` and measured by the
benchmark.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp

from physics_lm.data.igsm.gen import rand, streams
from physics_lm.data.igsm.gen.candidate import Template, candidates
from physics_lm.data.igsm.gen.chunked import by_work
from physics_lm.data.igsm.gen.hyper import target_ops
from physics_lm.data.igsm.gen.plan import draw_consts, plan_solution, solution_values
from physics_lm.data.igsm.gen.probe_arrays import probe_arrays
from physics_lm.data.igsm.gen.probe_names import probe_names
from physics_lm.data.igsm.gen.render import Rendered, Tables, render
from physics_lm.data.igsm.gen.retry import draw_backs, n_back_slots
from physics_lm.data.igsm.gen.structure import NI, D, W
from physics_lm.data.igsm.gen.template_hash import N_BINS, max_sketch_bytes, template_bins
from physics_lm.data.igsm.gen.unnecessary import add_unused

MAX_ROUNDS = 64
CPU_CHUNK = 128
PRESETS = {"med": (15, 20), "hard": (21, 28)}
REASK_OP_FACTOR = 2  # reask rows above twice the original op are redrawn (`reask.py`)


@dataclasses.dataclass(frozen=True)
class SamplerConfig:
    """Static description of what to sample (hashable: it is closed over by jit)."""

    max_op: int = 15
    max_edge: int = 20
    op: int | None = None  # fixed op (OOD sets), else the light distribution
    fmt: str = "pq"
    bins: tuple[int, ...] | None = None  # allowed template bins; None = all 23 (no hashing)
    seq_len: int = 768
    pool: int = 0  # candidates per round; 0 = automatic (`pool_size`)
    with_probes: bool = False
    reask: bool = False  # reask set (`reask.py`): `op` is the op of the original problems
    retry: str = "none"  # retry data (`retry.py`): none | retry | retry_weak | retry_miss
    retry_rate: float = 0.0  # retry data: probability of each further BACK sentence

    @property
    def n_steps(self) -> int:
        """Static bound on the op of any produced problem (= solution steps); reask sets keep
        rows of op <= REASK_OP_FACTOR x the original op (`reask.py`)."""
        if self.reask:
            return REASK_OP_FACTOR * self.op
        return self.op if self.op is not None else self.max_op

    @property
    def n_back_slots(self) -> int:
        """Static pool of BACK sentences per row (0 without retry data; `retry.n_back_slots`)."""
        return 0 if self.retry == "none" else n_back_slots(self.retry_rate, self.n_steps)

    @property
    def smax(self) -> int:
        """Static bound on solution parameters (each costs >= 1 op) plus slack."""
        return self.n_steps + 2

    @property
    def max_sentences(self) -> int:
        """Static bound on problem sentences (= structure edges). Not max_edge alone: the edge
        count is clamped up to (d-1) * w0 (SPEC §3, step 1), so up to 12 for any max_edge."""
        return max(self.max_edge, (D - 1) * W)

    def pool_size(self, batch_size: int) -> int:
        """Candidates drawn per round.

        Why B/8 (64..256): rounds repeat until every row is filled and the lanes of the last
        rounds are conditioned on the missing rows' ops (module docstring): ~1.4 candidates per
        problem at B = 1024; small pools also keep a round's working set in CPU caches.
        Divided by the share of allowed template bins (hash bins are ~uniform)."""
        if self.pool:
            return self.pool
        share = 1.0 if self.bins is None else len(self.bins) / N_BINS
        return min(max(64, -(-int(batch_size / 8 / share) // 64) * 64), 256)

    def max_rounds(self, batch_size: int) -> int:
        """Bound on selection rounds (~1.4 B / pool are needed; rows still empty are flagged)."""
        return 4 * -(-batch_size // self.pool_size(batch_size)) + MAX_ROUNDS

    @staticmethod
    def chunk_rows(batch_size: int) -> int:
        """Rows processed together after selection (results do not depend on it): chunks of
        128 on CPUs (cache, shorter loops), the whole batch on accelerators (parallelism)."""
        if jax.default_backend() == "cpu" and batch_size > CPU_CHUNK and not batch_size % CPU_CHUNK:
            return CPU_CHUNK
        return batch_size


def _bins_of(tpl, seeds, cfg: SamplerConfig) -> jax.Array:
    """Template bin of every candidate. The signs of the solution steps (sum or difference,
    "more than" or "times") are part of the sketch, so the sentence constants are drawn from the
    candidate's own seed here and again, identically, when the selected rows are rendered."""

    plans = jax.vmap(lambda t, seed: plan_solution(t, draw_consts(seed), cfg.n_steps))(tpl, seeds)
    return template_bins(plans, max_sketch_bytes(cfg.n_steps))


def _n_mentioned(t) -> jax.Array:
    """Parameters the texts mention (statements + abstract ones used by a statement or the
    solution): the reference corpora's `params` count, which omits abstract parameters that
    only enter the template as the structural closure of another one."""
    slots = jnp.arange(97)
    used = jnp.any(t.ideps_48x4.reshape(-1)[:, None] == slots[None, :], axis=0)
    used = used | jnp.any(t.topo_S[:, None] == slots[None, :], axis=0)
    return jnp.sum(t.tmpl_P[:NI]) + jnp.sum(used[NI:96] & t.tmpl_P[NI:96])


def _ranks_by_class(cls: jax.Array, n_cls: int) -> jax.Array:
    """Rank of each element among the earlier elements of its class (class n_cls-1 = none)."""
    hot = cls[:, None] == jnp.arange(n_cls)[None, :]
    return jnp.sum(jnp.where(hot, jnp.cumsum(hot, axis=0), 0), axis=1) - 1


def select_candidates(key: jax.Array, batch_size: int, cfg: SamplerConfig):
    seed = rand.seed_of(key)
    tgt = target_ops(seed, batch_size, cfg.max_op, cfg.op)
    C = cfg.pool_size(batch_size)
    K = cfg.n_steps + 2  # op buckets; K-1 = "not acceptable"
    rows = jnp.arange(batch_size)
    lanes = jnp.arange(C)

    def draw(r, s_min):
        seeds = rand.bits(rand.sub_seed(seed, streams.ROUND, r), streams.CANDIDATE, 0, C)
        cand, tries, exhausted = candidates(seeds, cfg.max_op, cfg.max_edge, cfg.op, cfg.smax,
                                            s_min)
        op = cand.tpl.op
        acc = cand.tpl.ok & (op <= cfg.n_steps) & (op >= s_min)
        if cfg.bins is not None:
            b = _bins_of(cand.tpl, cand.seed, cfg)
            acc = acc & jnp.any(b[:, None] == jnp.asarray(cfg.bins)[None, :], axis=1)
            cand = cand._replace(bin=b)
        return cand, acc, jnp.sum(tries), exhausted

    def lane_floors(need):
        """s_min of each lane: 1 (the official law) while the missing rows outnumber a pool;
        then each lane serves one missing row and conditions on s >= its target op."""
        if cfg.op is not None:
            return jnp.ones(C, jnp.int32)
        n_need = jnp.sum(need)
        (idx,) = jnp.nonzero(need, size=C, fill_value=0)
        row = idx[lanes % jnp.maximum(jnp.minimum(n_need, C), 1)]
        return jnp.where(n_need > C, 1, tgt[row])

    def body(c):
        out, filled, stats, r = c
        need = ~filled
        s_min = lane_floors(need)
        cand, acc, tries, exhausted = draw(r, s_min)
        op_c = jnp.where(acc, cand.tpl.op, K - 1)
        lane_rank = _ranks_by_class(op_c, K)
        row_rank = _ranks_by_class(jnp.where(need, tgt, K - 1), K)
        # slot (op, rank) -> the missing row that takes the rank-th usable lane of that op
        table = jnp.full((K, C), batch_size, jnp.int32).at[
            jnp.where(need, tgt, K), row_rank].set(rows, mode="drop")
        dest = jnp.where(op_c < K - 1, table[op_c, jnp.clip(lane_rank, 0, C - 1)], batch_size)
        out = jax.tree.map(lambda o, t: o.at[dest].set(t, mode="drop"), out, cand)
        filled = filled.at[dest].set(True, mode="drop")
        stats = {"candidates": stats["candidates"] + C, "inner_tries": stats["inner_tries"] + tries,
                 "acceptable": stats["acceptable"] + jnp.sum(acc),
                 "inner_exhausted": stats["inner_exhausted"] + exhausted,
                 "floored": stats["floored"] + jnp.sum(s_min > 1), "rounds": r + 1}
        return out, filled, stats, r + 1

    out0, _, _, _ = jax.eval_shape(draw, 0, jnp.ones(C, jnp.int32))
    out0 = jax.tree.map(lambda s: jnp.zeros((batch_size, *s.shape[1:]), s.dtype), out0)
    stats0 = {k: jnp.int32(0) for k in ("candidates", "inner_tries", "acceptable",
                                        "inner_exhausted", "floored", "rounds")}
    max_rounds = cfg.max_rounds(batch_size)

    def cond(c):
        return jnp.any(~c[1]) & (c[3] < max_rounds)

    out, filled, stats, _ = jax.lax.while_loop(
        cond, body, (out0, jnp.zeros(batch_size, jnp.bool_), stats0, jnp.int32(0)))
    return out, filled, stats


def render_seeds(key: jax.Array, batch_size: int) -> jax.Array:
    """uint32[batch_size]: the render seed of every row of the batch `key`."""
    return rand.bits(rand.seed_of(jax.random.fold_in(key, streams.KEY_RENDER)), streams.ROW, 0,
                     batch_size)


def finish_row(seed: jax.Array, t: Template, cand_seed: jax.Array, cfg: SamplerConfig,
               tables: Tables) -> dict[str, Any]:
    """Plan, render and label one row from its complete template (`add_unused` done)."""
    cs = draw_consts(cand_seed)
    plan = plan_solution(t, cs, cfg.n_steps)
    val = solution_values(plan)
    qslot = t.topo_S[jnp.maximum(t.n_sol - 1, 0)]
    answer = val[qslot]
    backs = (None if cfg.retry == "none"
             else draw_backs(seed, t, cfg.retry, cfg.retry_rate, cfg.n_back_slots))
    rd: Rendered = render(seed, tables, t, cs, plan, answer, cfg.fmt, cfg.seq_len,
                          cfg.max_sentences, backs)
    out = {
        "tokens": rd.tokens, "length": rd.length, "sol_pos": rd.sol_pos, "ans_pos": rd.ans_pos,
        "row_pos": rd.row_pos_S1, "op": t.op, "n_solution_params": t.n_sol,
        "question_kind": (qslot >= NI).astype(jnp.int32), "answer": answer,
        "plan": plan,
        "depth": t.d, "n_sentences": jnp.sum(t.G_3x4x4),
        "n_template_params": jnp.sum(t.tmpl_P), "plan_ok": plan.ok,
        "n_mentioned_params": _n_mentioned(t),
        "template": t,
    }
    if backs is not None:  # retry data; the probe arrays keep describing the correct sentences
        out.update(n_back=jnp.sum(backs.slot_N >= 0), back_capped=backs.capped,
                   back_count=backs.count_S, back_candidates=backs.n_cand_S,
                   back_tok=rd.back_tok_Nx3)
    if cfg.with_probes:
        out.update(probe_arrays(t, val))
        out.update(probe_names(t, rd.item_frag_4x4, rd.cat_frag_4, tables))
    return out


def sample_arrays(key: jax.Array, batch_size: int, cfg: SamplerConfig,
                  tables: Tables) -> dict[str, Any]:
    """Everything about a batch: tokens [B, T], lengths, positions and labels (dict of arrays)."""
    if cfg.reask:
        raise ValueError("sample_arrays: reask sets are drawn by reask.sample_reask_arrays")
    cand, filled, stats = select_candidates(key, batch_size, cfg)
    seeds = render_seeds(key, batch_size)

    def one(seed, c):
        return finish_row(seed, add_unused(c), c.seed, cfg, tables)

    # rows grouped by their number of unnecessary parameters (the `design_unused` loop)
    res = by_work(lambda xs: jax.vmap(one)(*xs), (seeds, cand), cfg.chunk_rows(batch_size),
                  jnp.sum(cand.rec.remain_I, axis=1))
    plans = res.pop("plan")
    # the split needed the bins to accept candidates; otherwise hash the batch at once
    res["template_bin"] = (template_bins(plans, max_sketch_bytes(cfg.n_steps))
                           if cfg.bins is None else cand.bin)
    res["valid"] = filled & res["plan_ok"]
    res["stats"] = stats
    return res
