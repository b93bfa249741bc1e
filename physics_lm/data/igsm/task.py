"""`IGSMTask`: iGSM problems generated on device, as a `Task` for the trainer (DESIGN.md).

`task.sample(fold_in(seed, step), B)` is pure and jittable (no host callbacks, static shapes): it
draws B problems with the official procedure (`gen/`, stage by stage), renders them to token ids
of the shared vocabulary and returns a `Batch`. Row layout (that of `Vocab.encode_example`):
``<bos> <problem> P [Q] <solution> S <answer> A <eos> <pad>...``.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp

from physics_lm.data.batch import Batch
from physics_lm.data.igsm.gen.reask import sample_reask_arrays
from physics_lm.data.igsm.gen.render import Tables
from physics_lm.data.igsm.gen.sampler import PRESETS, SamplerConfig, sample_arrays
from physics_lm.data.igsm.gen.template_hash import N_BINS
from physics_lm.data.igsm.text.vocab import get_vocab

# Largest fixed op we accept per max_edge: the official generator reaches op 23 (med) and 32
# (hard) with the presets' max_edge (SPEC §21); beyond max_edge + 12 candidates become too rare.
OP_SLACK = 12
# Rendered length (tokens) below which rows would overflow too often: measured maxima over 20k
# problems (benchmarks/igsm_sampler.py --lengths), rounded up; see `describe()["min_seq_len"]`.
MIN_SEQ_LEN = {"med": 768, "hard": 1024}
_LABEL_KEYS = ("op", "n_solution_params", "question_kind", "template_bin", "length", "valid",
               "overflow", "answer", "depth", "n_sentences", "n_template_params",
               "n_mentioned_params", "sol_pos", "ans_pos", "row_pos")
_REASK_KEYS = ("question_slot", "orig_question_slot", "orig_op")
# Out-of-distribution test ops: the paper's (Part 2.1) for the presets; M+5..M+8 for any other
# training max op M (`ood_ops`). The first of them is the op of the reask set's problems.
PAPER_OOD_OPS = {"med": (20, 21, 22, 23), "hard": (28, 29, 30, 31, 32)}


@dataclasses.dataclass(frozen=True)
class IGSMTask:
    """iGSM problems (Part 2.1) sampled inside the jitted training step.

    Attributes:
      preset: "med" (max_op 15, max_edge 20), "hard" (21, 28) or "custom" (give both).
      max_op, max_edge: override the preset's values.
      op: fixed op for out-of-distribution sets (e.g. med 20-23, hard 28-32); None = light draw.
        With `reask`, the op of the original problems (default: the first of `ood_ops`).
      reask: the Part 2.1 "reask" set (`gen/reask.py`): a problem of op `op` asked about another
        of its parameters, chosen uniformly; op, solution and template bin are the new
        question's (the op varies), and the split applies to the new solution's bin.
      fmt: "pq" (statements then question) or "qp".
      split: "train" (template bins in `train_bins`), "test" (the other bins) or "all".
      train_bins: the official training bins are 0-15.
      seq_len: T, static row length.
      loss_on: "solution" (solution, answer and eos tokens are predicted) or "all".
      with_probes: also return the V-probing arrays (costs a [72, 72] closure per row).
      pool: candidates per round (0 = automatic: B/8 in 64..256, divided by the allowed-bin
        share).
      groups: the batch is drawn as this many independent groups of B / groups rows (key
        fold_in(key, g) each; matching stays inside a group). Why: on a data-parallel mesh set it
        to (a multiple of) data x fsdp, and the group axis is sharded with the rows, so every
        device samples only its own rows instead of the whole global batch. The batch depends on
        `groups`, never on the device count. 1 = one group (the key is used as is).
    """

    preset: str = "med"
    max_op: int | None = None
    max_edge: int | None = None
    op: int | None = None
    fmt: str = "pq"
    split: str = "train"
    train_bins: tuple[int, ...] = tuple(range(16))
    seq_len: int = 768
    loss_on: str = "solution"
    with_probes: bool = False
    pool: int = 0
    groups: int = 1
    reask: bool = False

    def __post_init__(self) -> None:
        if self.preset not in (*PRESETS, "custom"):
            raise ValueError(f"preset: unknown value {self.preset!r} (med, hard or custom)")
        if self.preset == "custom" and (self.max_op is None or self.max_edge is None):
            raise ValueError("preset: 'custom' needs both max_op and max_edge")
        if not 1 <= self.resolved_max_op <= 32:
            raise ValueError(f"max_op: {self.resolved_max_op} is outside 1..32")
        if not 4 <= self.resolved_max_edge <= 48:
            raise ValueError(f"max_edge: {self.resolved_max_edge} is outside 4..48 "
                             "(4 layers of 4 items have at most 48 edges)")
        if self.reask and self.op is None:
            object.__setattr__(self, "op", self.ood_ops[0])
        if self.op is not None and not 1 <= self.op <= self.resolved_max_edge + OP_SLACK:
            hi = self.resolved_max_edge + OP_SLACK
            raise ValueError(f"op: {self.op} cannot be generated with max_edge "
                             f"{self.resolved_max_edge} (allowed 1..{hi})")
        if self.fmt not in ("pq", "qp"):
            raise ValueError(f"fmt: unknown value {self.fmt!r} (pq or qp)")
        if self.split not in ("train", "test", "all"):
            raise ValueError(f"split: unknown value {self.split!r} (train, test or all)")
        bins = set(self.train_bins)
        if not bins or not bins <= set(range(N_BINS)) or len(bins) == N_BINS:
            raise ValueError(f"train_bins: {self.train_bins!r} must be a proper non-empty subset "
                             f"of 0..{N_BINS - 1}")
        if self.groups < 1:
            raise ValueError(f"groups: {self.groups} must be >= 1")
        if self.loss_on not in ("solution", "all"):
            raise ValueError(f"loss_on: unknown value {self.loss_on!r} (solution or all)")
        need = self.min_seq_len
        if self.seq_len < need:
            raise ValueError(f"seq_len: {self.seq_len} is shorter than {need}, the longest "
                             f"rendered {self.preset} problem we measured (op={self.op})")

    @property
    def resolved_max_op(self) -> int:
        return self.max_op if self.max_op is not None else PRESETS.get(self.preset, (0, 0))[0]

    @property
    def resolved_max_edge(self) -> int:
        return self.max_edge if self.max_edge is not None else PRESETS.get(self.preset, (0, 0))[1]

    @property
    def ood_ops(self) -> tuple[int, ...]:
        """The out-of-distribution test ops: med 20-23, hard 28-32 (the paper), M+5..M+8 for a
        training max op M that is not a preset's."""
        top = self.resolved_max_op
        if self.preset in PAPER_OOD_OPS and top == PRESETS[self.preset][0]:
            return PAPER_OOD_OPS[self.preset]
        return tuple(range(top + 5, top + 9))

    @property
    def min_seq_len(self) -> int:
        # Custom presets: the measured med/hard maxima are ~38 tokens per structure edge
        # (757 for max_edge 20, 949 for 28); rows that still overflow are masked and counted.
        base = MIN_SEQ_LEN.get(self.preset, 40 * self.resolved_max_edge + 64)
        if self.op is not None and self.op > self.resolved_max_op:
            base += 64 * (self.op - self.resolved_max_op)  # ~40 tokens per extra op, measured
        if self.reask:  # rows up to op 2 x `op`; measured: ~17 solution tokens per op
            base += 16 * self.config.n_steps - 16 * self.op
        return base

    @property
    def bins(self) -> tuple[int, ...] | None:
        if self.split == "all":
            return None
        train = tuple(sorted(set(self.train_bins)))
        return train if self.split == "train" else tuple(b for b in range(N_BINS) if b not in train)

    @property
    def config(self) -> SamplerConfig:
        return SamplerConfig(self.resolved_max_op, self.resolved_max_edge, self.op, self.fmt,
                             self.bins, self.seq_len, self.pool, self.with_probes, self.reask)

    @property
    def name(self) -> str:
        op = "" if self.op is None else f"_op{self.op}"
        op += "_reask" if self.reask else ""
        return f"igsm_{self.preset}{op}_{self.fmt}_{self.split}"

    @property
    def vocab_size(self) -> int:
        return get_vocab().size

    @property
    def pad_id(self) -> int:
        return get_vocab().pad_id

    @property
    def bos_id(self) -> int:
        return get_vocab().bos_id

    @property
    def eos_id(self) -> int:
        return get_vocab().eos_id

    def sample(self, key: jax.Array, batch_size: int) -> Batch:
        """Pure, jittable: `batch_size` fresh problems from `key` (see module docstring).

        Labels: op, n_solution_params, question_kind (0 instance, 1 abstract), template_bin,
        length (untruncated), valid, overflow, answer, depth, n_sentences, n_template_params,
        sol_pos, ans_pos, row_pos [B, S+1] (probe rows: <solution>, then each solution
        sentence's "."), and with `with_probes` the probe_* arrays of `gen/probe_arrays.py`. Rows
        that are not valid or overflow seq_len get a zero loss mask. Reask tasks add
        question_slot, orig_question_slot (parameter slots, `gen/structure.py`) and orig_op.
        """
        res = self._sample_groups(key, batch_size)
        tokens = res["tokens"]
        T = self.seq_len
        t = jnp.arange(T)[None, :]
        eos = res["ans_pos"] + 2
        first = res["sol_pos"] if self.loss_on == "solution" else jnp.zeros_like(eos)
        overflow = res["length"] > T
        ok = res["valid"] & ~overflow
        mask = (t >= first[:, None]) & (t < eos[:, None]) & ok[:, None] & (t < T - 1)
        res["overflow"] = overflow
        labels = {k: res[k] for k in _LABEL_KEYS + (_REASK_KEYS if self.reask else ())}
        labels.update({k: v for k, v in res.items() if k.startswith("probe_")})
        labels = {k: jnp.asarray(v).astype(jnp.int32) for k, v in labels.items()}
        return Batch(tokens.astype(jnp.int32), mask.astype(jnp.float32), labels)

    def _sample_groups(self, key: jax.Array, batch_size: int) -> dict[str, Any]:
        G = self.groups
        sample = sample_reask_arrays if self.reask else sample_arrays
        if G == 1:
            return sample(key, batch_size, self.config, _tables())
        if batch_size % G:
            raise ValueError(f"groups: {G} does not divide the batch size {batch_size}")
        keys = jax.vmap(lambda g: jax.random.fold_in(key, g))(jnp.arange(G))
        res = jax.vmap(lambda k: sample(k, batch_size // G, self.config, _tables()))(keys)
        stats = {k: jnp.max(v) if k == "rounds" else jnp.sum(v)
                 for k, v in res.pop("stats").items()}
        res = jax.tree.map(lambda x: x.reshape(batch_size, *x.shape[2:]), res)
        res["stats"] = stats
        return res

    def batch_metrics(self, batch: Batch) -> dict[str, jax.Array]:
        """Shares of rows that were trained on (`rows_trained`: valid and within seq_len) and
        that overflowed seq_len: both other kinds get a zero loss mask, so a falling
        `rows_trained` says the context is too short for the problems drawn."""
        valid = batch.labels["valid"].astype(jnp.float32)
        overflow = batch.labels["overflow"].astype(jnp.float32)
        return {"rows_trained": jnp.mean(valid * (1.0 - overflow)),
                "rows_overflow": jnp.mean(overflow)}

    def heldout(self) -> IGSMTask:
        """The held-out variant for `eval_loss`: problems whose solution template lies in the
        bins training never sees (train <-> test; `split="all"` holds nothing out, so it stays)."""
        other = {"train": "test", "test": "train", "all": "all"}[self.split]
        return dataclasses.replace(self, split=other)

    def describe(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d.update(name=self.name, max_op=self.resolved_max_op, max_edge=self.resolved_max_edge,
                 bins=list(self.bins) if self.bins is not None else None,
                 vocab_size=self.vocab_size, min_seq_len=self.min_seq_len,
                 train_bins=list(self.train_bins))
        return d


_TABLES: list[Tables] = []


def _tables() -> Tables:
    if not _TABLES:
        _TABLES.append(Tables(get_vocab()))
    return _TABLES[0]
