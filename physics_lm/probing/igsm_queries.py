"""V-probe queries of Part 2.1, built on device from a sampled iGSM batch (SPEC §15).

A query asks one question about one parameter A (or a pair A, B) of one problem at one point of
its text: the row is cut after position p and ``<start> name(A) <end>`` (``<start> A <mid> B
<end>`` for `dep`) is appended; the probe reads the hidden state at ``<end>``. Per task:

  task       classes  where p is                                   label (`gen/probe_arrays.py`)
  nece       2        end of the question (qp: end of the problem)  A is necessary
  dep        2        end of the problem (before the question)      A depends on B (transitively)
  known      2        row r: ``<solution>`` or the "." of sentence r  A is defined by rows <= r
  value      24       row r                                          A's value, 23 = unknown
  can_next   2        row r                                          A could be defined next
  nece_next  2        row r                                          can_next and necessary

Columns A, B are uniform over the problem's `all_param` (B != A), the row r of the four row tasks
uniform over 0..n_sol, every draw independent (`queries` per task and problem). Rows that are not
valid or overflow get label -1 (not scored).

Packing: the queries of a problem share one forward pass. The row (its first `context` tokens) is
segment 0; query q is segment q + 1 at positions p_q + 1, ..., sees the row up to p_q and itself
(`GPT2(segments=...)`): exactly the truncated inputs of the paper, without one forward per query.
The focus subset of a binary task is its positives (so the report has recall and, from the
totals, the negatives' accuracy); of `value`, the known parameters.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import flax.struct
import jax
import jax.numpy as jnp

from physics_lm.data.batch import Batch
from physics_lm.data.igsm.text.vocab import get_vocab
from physics_lm.models.gpt2 import SharedPrefix

TASKS = ("nece", "dep", "known", "value", "can_next", "nece_next")
NUM_CLASSES = {"nece": 2, "dep": 2, "known": 2, "value": 24, "can_next": 2, "nece_next": 2}
ROW_TASKS = ("known", "value", "can_next", "nece_next")
MAX_DIST = 8  # distances to the question are reported as 1..8 and "> 8 or unreachable"


class Queries(NamedTuple):
    """Queries of a batch, Q per row (tasks in the order asked, `queries` each); leading B."""

    tokens: jax.Array  # int32[B, Q, L]: <start> name(A) [<mid> name(B)] <end> pad...
    end: jax.Array  # int32[B, Q]: index of <end> within the query
    pos: jax.Array  # int32[B, Q]: p, the last row position the query sees
    labels: jax.Array  # int32[B, Q]: class, -1 = not scored
    task: jax.Array  # int32[Q]: index into `tasks`
    column: jax.Array  # int32[B, Q]: A's column
    row: jax.Array  # int32[B, Q]: solution row r (-1 for nece and dep)
    dist: jax.Array  # int32[B, Q]: undirected distance of A to the question (MAX_DIST+1 = far)


def query_len(tasks: Sequence[str], name_len: int) -> int:
    return name_len * (2 if "dep" in tasks else 1) + (3 if "dep" in tasks else 2)


def question_distance(neighbor_BxPxP: jax.Array, question_B: jax.Array) -> jax.Array:
    """int32[B, P]: shortest undirected path length from the question's column in the
    dependency graph (direct edges of `whole_template`), MAX_DIST + 1 beyond MAX_DIST."""
    adj = (neighbor_BxPxP | jnp.swapaxes(neighbor_BxPxP, 1, 2)).astype(jnp.float32)
    P = adj.shape[1]
    reach = jax.nn.one_hot(question_B, P) > 0
    dist = jnp.where(reach, 0, MAX_DIST + 1)
    for t in range(1, MAX_DIST + 1):
        reach = reach | (jnp.einsum("bp,bpq->bq", reach.astype(jnp.float32), adj) > 0)
        dist = jnp.where(reach & (dist > MAX_DIST), t, dist)
    return dist.astype(jnp.int32)


def _uniform_column(key: jax.Array, ok_BxP: jax.Array, n: int) -> jax.Array:
    """int32[B, n]: columns drawn uniformly (with replacement) among `ok` ones."""
    logits = jnp.where(ok_BxP, 0.0, -jnp.inf)
    return jax.random.categorical(key, logits[:, None, :], shape=(ok_BxP.shape[0], n))


def _name_query(name_a, len_a, name_b, len_b, pair: bool, L: int) -> tuple[jax.Array, jax.Array]:
    """One query's tokens int32[L] and the index of its <end>."""
    v = get_vocab()
    t = jnp.arange(L)
    e_a = 1 + len_a
    e_mid = e_a + (1 if pair else 0)
    e_b = e_mid + (len_b if pair else 0)
    na, nb = name_a.shape[0], name_b.shape[0]
    tok = jnp.where(t < 1, v.start_id,
          jnp.where(t < e_a, name_a[jnp.clip(t - 1, 0, na - 1)],
          jnp.where(t < e_mid, v.mid_id,
          jnp.where(t < e_b, name_b[jnp.clip(t - e_mid, 0, nb - 1)],
          jnp.where(t == e_b, v.end_id, v.pad_id)))))
    return tok.astype(jnp.int32), e_b


def build_queries(key: jax.Array, batch: Batch, tasks: Sequence[str], queries: int,
                  fmt: str) -> Queries:
    """`queries` draws per task and row of `batch` (an IGSMTask batch with `with_probes`)."""
    lab = batch.labels
    names, name_lens = lab["probe_name"], lab["probe_name_len"]
    B, P = name_lens.shape
    L = query_len(tasks, names.shape[-1])
    ok_BxP = name_lens > 0
    usable_B = (lab["valid"] == 1) & (lab["overflow"] == 0)
    sol = lab["sol_pos"]
    how = jnp.argmax(batch.tokens == get_vocab().word_to_id("How"), axis=1)
    end_problem = sol - 1 if fmt == "qp" else how - 1
    dist_BxP = question_distance(lab["probe_neighbor"] > 0, lab["probe_question"])
    bidx = jnp.arange(B)[:, None]
    out = []
    for g, name in enumerate(tasks):
        k_a, k_b, k_r = jax.random.split(jax.random.fold_in(key, g), 3)
        a = _uniform_column(k_a, ok_BxP, queries)
        row = jnp.full((B, queries), -1, jnp.int32)
        b = a
        if name == "nece":
            pos = jnp.broadcast_to(sol[:, None] - 1, (B, queries))
            y = lab["probe_nece"][bidx, a]
        elif name == "dep":
            not_a = ok_BxP[:, None, :] & (jnp.arange(P)[None, None, :] != a[..., None])
            b = jax.random.categorical(k_b, jnp.where(not_a, 0.0, -jnp.inf))
            pos = jnp.broadcast_to(end_problem[:, None], (B, queries))
            y = lab["probe_dep"][bidx, a, b]
        else:
            n_rows = lab["n_solution_params"] + 1
            row = jax.random.randint(k_r, (B, queries), 0, n_rows[:, None]).astype(jnp.int32)
            pos = lab["row_pos"][bidx, row]
            y = lab[f"probe_{name}"][bidx, row, a]
        pair = name == "dep"
        tok, end = jax.vmap(jax.vmap(lambda na, la, nb, lb, pair=pair: _name_query(
            na, la, nb, lb, pair, L)))(names[bidx, a], name_lens[bidx, a],
                                       names[bidx, b], name_lens[bidx, b])
        y = jnp.where(usable_B[:, None], y, -1)
        out.append(Queries(tok, end, pos, y.astype(jnp.int32), jnp.full(queries, g, jnp.int32),
                           a.astype(jnp.int32), row, dist_BxP[bidx, a]))
    cat = lambda *xs: jnp.concatenate(xs, axis=1 if xs[0].ndim > 1 else 0)
    return jax.tree.map(cat, *out)


@flax.struct.dataclass
class Packed:
    """A row and its queries as one sequence (`GPT2(segments=...)`); leading B. The layout
    (C context tokens, then queries of L tokens) is static: `layout()` gives the model it."""

    tokens: jax.Array  # int32[B, C + Q·L]
    positions: jax.Array
    segments: jax.Array
    context: jax.Array
    end: jax.Array  # int32[B, Q]: index of each query's <end> in the packed sequence
    prefix_len: int = flax.struct.field(pytree_node=False)  # C
    segment_len: int = flax.struct.field(pytree_node=False)  # L

    def layout(self) -> SharedPrefix:
        """The `segments` argument of `GPT2` for these rows (any leading axes dropped first)."""
        return SharedPrefix(self.segments, self.context, self.prefix_len, self.segment_len)


def pack(tokens_BxT: jax.Array, q: Queries, context: int) -> Packed:
    """The first `context` row tokens followed by every query (module docstring)."""
    B, Q, L = q.tokens.shape
    row = tokens_BxT[:, :context]
    big = jnp.iinfo(jnp.int32).max
    tokens = jnp.concatenate([row, q.tokens.reshape(B, Q * L)], axis=1)
    q_pos = q.pos[..., None] + 1 + jnp.arange(L)[None, None, :]
    positions = jnp.concatenate([jnp.broadcast_to(jnp.arange(context), (B, context)),
                                 q_pos.reshape(B, Q * L)], axis=1)
    seg = jnp.concatenate([jnp.zeros((B, context), jnp.int32),
                           jnp.broadcast_to(jnp.repeat(jnp.arange(1, Q + 1), L), (B, Q * L))],
                          axis=1)
    ctx = jnp.concatenate([jnp.full((B, context), big, jnp.int32),
                           jnp.repeat(q.pos + 1, L, axis=1)], axis=1)
    end = context + jnp.arange(Q)[None, :] * L + q.end
    return Packed(tokens.astype(jnp.int32), positions.astype(jnp.int32), seg.astype(jnp.int32),
                  ctx.astype(jnp.int32), end.astype(jnp.int32), prefix_len=context,
                  segment_len=L)
