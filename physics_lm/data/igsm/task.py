"""`IGSMTask`: iGSM problems generated on device, as a `Task` for the trainer (DESIGN.md).

`task.sample(fold_in(seed, step), B)` is pure and jittable (no host callbacks, static shapes): it
draws B problems with the official procedure (`gen/`, stage by stage), renders them to token ids
of the shared vocabulary and returns a `Batch`. Row layout (that of `Vocab.encode_example`):
``<bos> <problem> P [Q] <solution> S <answer> A <eos> <pad>...``.

Part 2.2 options: retry data (`retry`, `retry_rate`: ``Define <X> as BACK.`` sentences before
solution sentences, `gen/retry.py`; `retry_mask`: no loss on the wrong parameter's name, or on the
whole ``Define <X> as``) and packing (`packing="pack"`: problems written one after another into
each row, a problem that does not fit is dropped, `gen/pack.py`).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp

from physics_lm.data.batch import Batch
from physics_lm.data.igsm.gen.layout import prefix_sum
from physics_lm.data.igsm.gen.pack import pack_rows
from physics_lm.data.igsm.gen.reask import sample_reask_arrays
from physics_lm.data.igsm.gen.render import Tables
from physics_lm.data.igsm.gen.retry import MAX_RATE, RETRY_KINDS
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
_RETRY_KEYS = ("n_back", "back_capped", "back_count", "back_candidates")
_PACK_KEYS = ("n_problems", "length", "valid", "overflow", "exhausted")
RETRY_MASKS = ("none", "mistake", "prefix")
PACKINGS = ("single", "pack")
# Mean rendered length (tokens, markers included) of problems without retry data, measured on
# 2,048 problems each; a lower estimate for custom presets (measured: 122 / 161 / 219 tokens for
# max_edge 6 / 10 / 16). Sizes the stream a packed batch is cut from (`pack_stream`).
MEAN_LEN = {"med": 279, "hard": 355}
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
      retry: Part 2.2 retry data: "none", "retry" (wrong parameters not yet computable),
        "retry_weak" (necessary parameters of this or a later sentence) or "retry_miss" (any
        parameter not yet defined); `gen/retry.py`. Answer and layout are unchanged; the probe
        rows stay on the correct sentences.
      retry_rate: p in (0, 0.75]: before each solution sentence another BACK sentence with
        probability p while candidates remain (a truncated geometric count).
      retry_mask: "none", "mistake" (no loss on the wrong parameter's name; " Define", " as",
        " BACK", "." keep theirs: the official `mask_label`) or "prefix" (no loss on the whole
        "Define <X> as": the official `mask_label2`).
      packing: "single" (one problem per row) or "pack" (problems one after another in each row,
        attention not reset; a problem that does not fit is dropped; `gen/pack.py`). Packed
        batches carry row labels only (n_problems, length, valid, overflow, exhausted, and
        n_back with retry data).
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
    retry: str = "none"
    retry_rate: float = 0.0
    retry_mask: str = "none"
    packing: str = "single"

    def __post_init__(self) -> None:
        # a list (a config read from JSON) would make the task unhashable: it keys jit caches
        object.__setattr__(self, "train_bins", tuple(self.train_bins))
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
        self._check_part22()
        need = self.min_seq_len
        if self.seq_len < need:
            raise ValueError(f"seq_len: {self.seq_len} is shorter than {need}, the longest "
                             f"rendered {self.preset} problem we measured (op={self.op})")

    def _check_part22(self) -> None:
        if self.retry not in RETRY_KINDS:
            raise ValueError(f"retry: unknown value {self.retry!r} ({', '.join(RETRY_KINDS)})")
        rate = self.retry_rate
        if not isinstance(rate, (int, float)) or isinstance(rate, bool):
            raise ValueError(f"retry_rate: {rate!r} is not a number")
        if self.retry == "none" and rate != 0:
            raise ValueError(f"retry_rate: {rate} is set but retry='none' (choose a retry kind)")
        if self.retry != "none" and not 0 < rate <= MAX_RATE:
            raise ValueError(f"retry_rate: {rate} must be in (0, {MAX_RATE}] with "
                             f"retry={self.retry!r}")
        if self.retry_mask not in RETRY_MASKS:
            raise ValueError(f"retry_mask: unknown value {self.retry_mask!r} "
                             f"({', '.join(RETRY_MASKS)})")
        if self.retry_mask != "none" and self.retry == "none":
            raise ValueError(f"retry_mask: {self.retry_mask!r} needs retry data (retry='none')")
        if self.packing not in PACKINGS:
            raise ValueError(f"packing: unknown value {self.packing!r} ({', '.join(PACKINGS)})")
        if self.reask and (self.retry != "none" or self.packing != "single"):
            raise ValueError(f"reask: reask sets are evaluation sets: retry={self.retry!r} and "
                             f"packing={self.packing!r} must be 'none' and 'single'")
        if self.packing == "pack" and self.with_probes:
            raise ValueError("packing: 'pack' rows hold several problems; the probe arrays "
                             "(with_probes=True) need packing='single'")

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
                             self.bins, self.seq_len, self.pool, self.with_probes, self.reask,
                             self.retry, float(self.retry_rate))

    def pack_stream(self, rows: int) -> int:
        """Problems drawn for `rows` packed rows. A row consumes ~T / mean length + 0.6 problems
        (the one that does not fit included), with a standard deviation of 0.67-1.06 (simulated
        on measured lengths, T / mean from 1.8 to 5.8); retry data only lengthens problems. Drawn:
        T / mean + 0.75 per row plus 5 standard deviations (bounded by 0.6 + 0.1 T / mean) of the
        total, so that a row runs out of problems (`exhausted`, reported by `batch_metrics`)
        essentially never."""
        per_row = self.seq_len / MEAN_LEN.get(self.preset, 10 * self.resolved_max_edge + 50)
        sd = 0.6 + 0.1 * per_row
        return math.ceil(rows * (per_row + 0.75) + 5 * sd * math.sqrt(rows)) + 4

    @property
    def name(self) -> str:
        op = "" if self.op is None else f"_op{self.op}"
        op += "_reask" if self.reask else ""
        if self.retry != "none":
            mask = "" if self.retry_mask == "none" else f"_mask{self.retry_mask}"
            op += f"_{self.retry}{self.retry_rate:g}{mask}"
        op += "_pack" if self.packing == "pack" else ""
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
        """Pure, jittable: `batch_size` fresh rows from `key` (see module docstring).

        Labels: op, n_solution_params, question_kind (0 instance, 1 abstract), template_bin,
        length (untruncated), valid, overflow, answer, depth, n_sentences, n_template_params,
        sol_pos, ans_pos, row_pos [B, S+1] (probe rows: <solution>, then each correct solution
        sentence's "."), and with `with_probes` the probe_* arrays of `gen/probe_arrays.py`. Rows
        that are not valid or overflow seq_len get a zero loss mask. Reask tasks add
        question_slot, orig_question_slot (parameter slots, `gen/structure.py`) and orig_op.
        Retry data adds n_back (BACK sentences), back_capped (the row's pool of BACK sentences
        was too small: never observed), back_count and back_candidates [B, S] (BACK sentences
        and candidates before each solution sentence). Packed rows carry n_problems, length
        (positions used), valid (>= 1 problem), overflow (0), exhausted (the row's stream ran
        out) and, with retry data, n_back.
        """
        res = self._sample_groups(key, batch_size)
        if self.packing == "pack":
            keys = _PACK_KEYS + (("n_back",) if self.retry != "none" else ())
        else:
            keys = _LABEL_KEYS + (_REASK_KEYS if self.reask else ())
            keys += _RETRY_KEYS if self.retry != "none" else ()
        labels = {k: res[k] for k in keys}
        labels.update({k: v for k, v in res.items() if k.startswith("probe_")})
        labels = {k: jnp.asarray(v).astype(jnp.int32) for k, v in labels.items()}
        return Batch(res["tokens"].astype(jnp.int32), res["loss_mask"].astype(jnp.float32),
                     labels)

    def _rows(self, key: jax.Array, n: int) -> dict[str, Any]:
        """One group: n rows with their loss mask (`loss_mask`) and labels."""
        if self.packing == "pack":
            res = sample_arrays(key, self.pack_stream(n), self.config, _tables())
        else:
            res = (sample_reask_arrays if self.reask else sample_arrays)(
                key, n, self.config, _tables())
        T = self.seq_len
        t = jnp.arange(T)[None, :]
        eos = res["ans_pos"] + 2
        first = res["sol_pos"] if self.loss_on == "solution" else jnp.zeros_like(eos)
        overflow = res["length"] > T
        ok = res["valid"] & ~overflow
        mask = (t >= first[:, None]) & (t < eos[:, None]) & ok[:, None] & (t < T - 1)
        if self.retry_mask != "none":
            mask = mask & ~_retry_masked(res["back_tok"], T, self.retry_mask)
        res["overflow"] = overflow
        res["loss_mask"] = mask
        if self.packing == "single":
            return res
        sums = {"n_back": res["n_back"]} if self.retry != "none" else {}
        packed, info = pack_rows(res["length"], res["valid"], {"tokens": res["tokens"],
                                 "loss_mask": mask}, {"tokens": self.pad_id, "loss_mask": False},
                                 sums, n, T)
        return {**packed, **info, "valid": info["n_problems"] > 0,
                "overflow": jnp.zeros(n, jnp.bool_), "stats": res["stats"]}

    def _sample_groups(self, key: jax.Array, batch_size: int) -> dict[str, Any]:
        G = self.groups
        if G == 1:
            return self._rows(key, batch_size)
        if batch_size % G:
            raise ValueError(f"groups: {G} does not divide the batch size {batch_size}")
        keys = jax.vmap(lambda g: jax.random.fold_in(key, g))(jnp.arange(G))
        res = jax.vmap(lambda k: self._rows(k, batch_size // G))(keys)
        stats = {k: jnp.max(v) if k == "rounds" else jnp.sum(v)
                 for k, v in res.pop("stats").items()}
        res = jax.tree.map(lambda x: x.reshape(batch_size, *x.shape[2:]), res)
        res["stats"] = stats
        return res

    def batch_metrics(self, batch: Batch) -> dict[str, jax.Array]:
        """Shares of rows that were trained on (`rows_trained`: valid and within seq_len) and
        that overflowed seq_len: both other kinds get a zero loss mask, so a falling
        `rows_trained` says the context is too short for the problems drawn. Retry data adds
        `backs_per_problem` (BACK sentences per trained problem) and `rows_back_capped`; packing
        adds `problems_per_row`, `row_fill` (share of the context used) and `rows_exhausted`."""
        lab = batch.labels
        valid = lab["valid"].astype(jnp.float32)
        overflow = lab["overflow"].astype(jnp.float32)
        out = {"rows_trained": jnp.mean(valid * (1.0 - overflow)),
               "rows_overflow": jnp.mean(overflow)}
        if self.packing == "pack":
            n_problems = lab["n_problems"].astype(jnp.float32)
            out.update(problems_per_row=jnp.mean(n_problems),
                       row_fill=jnp.mean(lab["length"].astype(jnp.float32)) / self.seq_len,
                       rows_exhausted=jnp.mean(lab["exhausted"].astype(jnp.float32)))
            trained = jnp.sum(n_problems)
        else:
            trained = jnp.sum(valid * (1.0 - overflow))
        if self.retry != "none":
            backs = lab["n_back"].astype(jnp.float32)
            if self.packing == "single":
                backs = backs * valid * (1.0 - overflow)
                out["rows_back_capped"] = jnp.mean(lab["back_capped"].astype(jnp.float32))
            out["backs_per_problem"] = jnp.sum(backs) / jnp.maximum(trained, 1.0)
        return out

    def heldout(self) -> IGSMTask:
        """The held-out variant for `eval_loss`: problems whose solution template lies in the
        bins training never sees (train <-> test; `split="all"` holds nothing out, so it stays)."""
        other = {"train": "test", "test": "train", "all": "all"}[self.split]
        return dataclasses.replace(self, split=other)

    def probed(self) -> IGSMTask:
        """The variant whose samples carry the V-probe arrays: one problem per row (a probe
        position indexes one problem), whatever packing the model was trained with."""
        return dataclasses.replace(self, with_probes=True, packing="single")

    def describe(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d.update(name=self.name, max_op=self.resolved_max_op, max_edge=self.resolved_max_edge,
                 bins=list(self.bins) if self.bins is not None else None,
                 vocab_size=self.vocab_size, min_seq_len=self.min_seq_len,
                 train_bins=list(self.train_bins))
        return d


def _retry_masked(back_tok: jax.Array, T: int, mode: str) -> jax.Array:
    """bool[B, T]: positions whose prediction gets no loss in the BACK sentences (back_tok
    [B, N, 3]: positions of "Define", of the wrong parameter's name and of "as"; -1 unused).
    "mistake": the name's tokens are not predicted; "prefix": "Define <name> as" is not. The
    loss mask weighs the prediction of token t + 1 at position t, hence the shift by one."""
    define, name, as_ = back_tok[..., 0], back_tok[..., 1], back_tok[..., 2]
    lo, hi = (name - 1, as_ - 1) if mode == "mistake" else (define - 1, as_)
    used = define >= 0
    lo = jnp.where(used, jnp.clip(lo, 0, T), T)
    hi = jnp.where(used, jnp.clip(hi, 0, T), T)
    rows = jnp.arange(back_tok.shape[0])[:, None]
    delta = jnp.zeros((back_tok.shape[0], T + 1), jnp.int32)
    delta = delta.at[rows, lo].add(1).at[rows, hi].add(-1)
    return prefix_sum(delta)[:, :T] > 0  # the spans' prefix sums never go negative


_TABLES: list[Tables] = []


def _tables() -> Tables:
    if not _TABLES:
        _TABLES.append(Tables(get_vocab()))
    return _TABLES[0]
