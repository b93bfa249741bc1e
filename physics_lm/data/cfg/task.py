"""CFGTask: Part 1 training rows drawn on device, with NT labels and optional corruption.

How strings fill a context of T = seq_len tokens (every choice is a pure function of the key):

- ``packing="pack"`` (default; the paper's 512-token context): ``BOS s1 EOS BOS s2 EOS ...``
  concatenated and cut at T, so the last string is usually cut (its tokens are still trained on;
  its EOS is not in the row). Each row draws K = ``strings_per_row`` fresh strings; K = 0 means
  auto: ``min(ceil(T / (min_len + 2)), ceil(T / (expected_len + 2)) + 2)``. The first term can
  never leave pad; the second is cheaper and in practice always fills the row (cfg3f, T=512: 5
  strings of mean 250 for 512 slots). If the K strings end before T, the tail is pad with loss
  mask 0, and ``labels["n_pad"]`` counts it, so a too-small K shows up in the logs.
- ``packing="single"``: one string per row, ``BOS s EOS pad ...``. Each row draws K candidates
  (K = 0 means auto: 1 when ``max_len + 2 <= T``, since nothing can overflow, else 4) and keeps the
  first that fits. If none fits, the row holds the first candidate cut at T with no EOS and
  ``labels["overflow"]`` is 1. Keeping the first fitting candidate conditions the distribution on
  ``len + 2 <= T``; pick T above the grammar's p99 (README §2) so the conditioning is negligible.

Corruption (SPEC §7 proposal; the official code is unreleased): each string is perturbed with
probability ``corrupt_frac``, and a perturbed string has each token independently replaced, with
probability ``corrupt_rate``, by a *different* uniformly random terminal (`corrupt_tokens`). The
clean/perturbed choice comes from the string's own key. NT labels stay those of the clean tree.

Labels (B = batch, T = seq_len, D = grammar depth; -1 marks "not applicable"):
  nt_ancestor int32[B,T,D]: local class of the token's level-l ancestor (-1 at BOS/EOS/pad).
  nt_boundary int32[B,T,D]: 1 iff the token ends its level-l ancestor's span (-1 at non-terminals).
  string_id int32[B,T]: which string of the row the position belongs to, BOS/EOS included (-1 pad).
  corrupted int32[B,T]: 1 where a token was replaced.
  string_corrupted int32[B,T]: 1 on every position (BOS..EOS) of a string drawn as perturbed.
  overflow int32[B]: single: no candidate fitted (row is a cut string); pack: always 0.
  n_pad int32[B]: number of pad positions in the row.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any

import jax
import jax.numpy as jnp

from physics_lm.data.batch import Batch
from physics_lm.data.cfg.grammar import Grammar, grammar_names, load_grammar
from physics_lm.data.cfg.sampler import CFGStrings, sample_from_keys, take_rows

PACKINGS = ("pack", "single")


@functools.partial(jax.jit, static_argnames=("num_sym",))
def corrupt_tokens(
    key: jax.Array, tokens: jax.Array, length: jax.Array, rate: float | jax.Array, num_sym: int
) -> tuple[jax.Array, jax.Array]:
    """Replaces each real token with probability `rate` by a different uniform terminal.

    Jitted and shape-generic, so an evaluator can corrupt prefixes with the training recipe
    (inside another jit it inlines).

    Args:
      key: a jax.random key.
      tokens: int32[..., L] terminal ids 1..num_sym (anything past `length` is left alone).
      length: int[...] number of real tokens per row (broadcast against tokens[..., 0]).
      rate: per-token replacement probability.
      num_sym: number of terminals (>= 2; static).

    Returns:
      (new tokens int32[..., L], replaced int32[..., L] 0/1).
    """
    k_flip, k_shift = jax.random.split(key)
    pos = jnp.arange(tokens.shape[-1])
    real = pos < jnp.asarray(length)[..., None]
    replaced = (jax.random.uniform(k_flip, tokens.shape) < rate) & real
    # A shift in 1..num_sym-1 modulo num_sym is uniform over the *other* terminals.
    shift = jax.random.randint(k_shift, tokens.shape, 1, num_sym)
    new = jnp.where(replaced, (tokens - 1 + shift) % num_sym + 1, tokens)
    return new.astype(tokens.dtype), replaced.astype(jnp.int32)


@dataclasses.dataclass(frozen=True)
class CFGTask:
    """Rows of CFG strings for next-token training (see the module docstring for the layout).

    Attributes:
      grammar: a shipped grammar name (`grammar_names()`).
      seq_len: T, tokens per row.
      packing: "pack" (many strings per row, cut at T) or "single" (one string per row).
      corrupt_frac: probability that a string is perturbed.
      corrupt_rate: per-token replacement probability inside a perturbed string.
      strings_per_row: strings drawn per row (pack) or candidates per row (single); 0 = auto.
    """

    grammar: str = "cfg3b"
    seq_len: int = 512
    packing: str = "pack"
    corrupt_frac: float = 0.0
    corrupt_rate: float = 0.15
    strings_per_row: int = 0

    def __post_init__(self) -> None:
        if self.grammar not in grammar_names():
            raise ValueError(
                f"grammar={self.grammar!r} is unknown; known: {', '.join(grammar_names())}"
            )
        if self.packing not in PACKINGS:
            raise ValueError(f"packing={self.packing!r} must be one of {PACKINGS}")
        for field in ("corrupt_frac", "corrupt_rate"):
            value = getattr(self, field)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{field}={value!r} must be in [0, 1]")
        if self.strings_per_row < 0:
            raise ValueError(f"strings_per_row={self.strings_per_row!r} must be >= 0 (0 = auto)")
        need = self.spec.min_len + 2 if self.packing == "single" else 2
        if self.seq_len < need:
            raise ValueError(f"seq_len={self.seq_len!r} is too small for packing="
                             f"{self.packing!r} on {self.grammar} (need >= {need})")

    # -- the Task protocol's attributes ------------------------------------------------------------
    @property
    def spec(self) -> Grammar:
        """The Grammar object (rules and tables) behind the `grammar` name."""
        return load_grammar(self.grammar)

    @property
    def name(self) -> str:
        return f"cfg/{self.grammar}"

    @property
    def vocab_size(self) -> int:
        return self.spec.vocab_size

    @property
    def pad_id(self) -> int:
        return self.spec.pad_id

    @property
    def bos_id(self) -> int:
        return self.spec.bos_id

    @property
    def eos_id(self) -> int:
        return self.spec.eos_id

    @functools.cached_property
    def n_strings(self) -> int:
        """K: strings (pack) or candidates (single) drawn per row, after resolving auto."""
        if self.strings_per_row:
            return self.strings_per_row
        g, T = self.spec, self.seq_len
        if self.packing == "single":
            return 1 if g.max_len + 2 <= T else 4
        return min(math.ceil(T / (g.min_len + 2)), math.ceil(T / (g.expected_len + 2)) + 2)

    def heldout(self) -> CFGTask:
        """The held-out variant: a grammar has no held-out part, so the same task; the trainer
        samples it from the eval key stream, which training never uses (fresh strings)."""
        return self

    def batch_metrics(self, batch: Batch) -> dict[str, jax.Array]:
        """Nothing to report: every sampled string is whole (packing cuts only the last one)."""
        del batch
        return {}

    def describe(self) -> dict[str, Any]:
        g = self.spec
        return {
            **dataclasses.asdict(self), "name": self.name, "n_strings": self.n_strings,
            "vocab_size": self.vocab_size, "pad_id": self.pad_id, "bos_id": self.bos_id,
            "eos_id": self.eos_id, "depth": g.depth, "num_sym": g.num_sym, "min_len": g.min_len,
            "expected_len": g.expected_len, "max_len": g.max_len,
        }

    # -- sampling ----------------------------------------------------------------------------------
    def _draw(self, keys_N: jax.Array) -> tuple[CFGStrings, jax.Array, jax.Array]:
        """One string per key with its corruption: (strings, replaced_NxL, perturbed_N)."""
        k_tree_N, k_corrupt_N = jax.vmap(jax.random.split, out_axes=1)(keys_N)
        s = sample_from_keys(k_tree_N, self.spec)
        zero_NxL = jnp.zeros_like(s.tokens)
        if self.corrupt_frac == 0.0:
            return s, zero_NxL, jnp.zeros(keys_N.shape, jnp.int32)

        def corrupt_one(key, tokens_L, length):
            k_choice, k_tok = jax.random.split(key)
            perturbed = jax.random.uniform(k_choice) < self.corrupt_frac
            tok_L, rep_L = corrupt_tokens(k_tok, tokens_L, length, self.corrupt_rate,
                                          self.spec.num_sym)
            return (jnp.where(perturbed, tok_L, tokens_L), jnp.where(perturbed, rep_L, 0),
                    perturbed.astype(jnp.int32))

        tok_NxL, rep_NxL, pert_N = jax.vmap(corrupt_one)(k_corrupt_N, s.tokens, s.length)
        return s._replace(tokens=tok_NxL), rep_NxL, pert_N

    def sample(self, key: jax.Array, batch_size: int) -> Batch:
        """Pure and jittable: `batch_size` rows of T tokens with labels (module docstring).

        Jitted here too (the task is a static, hashable argument), so a host-side caller gets
        one compiled call instead of op-by-op dispatch; inside a trainer's jit it simply inlines.
        """
        return _sample_jit(self, key, batch_size)

    def _sample(self, key: jax.Array, batch_size: int) -> Batch:
        """The traced body of `sample`: K strings per row, then the row layout."""
        B, K, T = batch_size, self.n_strings, self.seq_len
        s, rep_NxL, pert_N = self._draw(jax.random.split(key, B * K))
        tok_BxKxL = s.tokens.reshape(B, K, -1)
        len_BxK = s.length.reshape(B, K)
        anc_BxKxLxD = s.nt_ancestor.reshape(B, K, *s.nt_ancestor.shape[1:])
        bnd_BxKxLxD = s.nt_boundary.reshape(B, K, *s.nt_boundary.shape[1:])
        rep_BxKxL = rep_NxL.reshape(B, K, -1)
        pert_BxK = pert_N.reshape(B, K)
        overflow_B = jnp.zeros((B,), jnp.int32)
        if self.packing == "single":
            fits_BxK = len_BxK + 2 <= T
            pick_B = jnp.argmax(fits_BxK, axis=1)  # first fitting candidate, else 0
            overflow_B = (~jnp.any(fits_BxK, axis=1)).astype(jnp.int32)

            def take(x):
                return x[jnp.arange(B), pick_B][:, None]

            tok_BxKxL, len_BxK, anc_BxKxLxD, bnd_BxKxLxD, rep_BxKxL, pert_BxK = map(
                take, (tok_BxKxL, len_BxK, anc_BxKxLxD, bnd_BxKxLxD, rep_BxKxL, pert_BxK))
        return self._layout(tok_BxKxL, len_BxK, anc_BxKxLxD, bnd_BxKxLxD, rep_BxKxL, pert_BxK,
                            overflow_B)

    def _layout(
        self, tok_BxKxL: jax.Array, len_BxK: jax.Array, anc_BxKxLxD: jax.Array,
        bnd_BxKxLxD: jax.Array, rep_BxKxL: jax.Array, pert_BxK: jax.Array, overflow_B: jax.Array,
    ) -> Batch:
        """Lays K strings per row out as BOS s EOS BOS s EOS ..., cut at T, then pad."""
        B, K, L = tok_BxKxL.shape
        T, D = self.seq_len, anc_BxKxLxD.shape[-1]
        seg_BxK = len_BxK + 2
        end_BxK = jnp.cumsum(seg_BxK, axis=1)
        start_BxK = end_BxK - seg_BxK
        t_T = jnp.arange(T)
        sid_BxT = jnp.sum(end_BxK[:, None, :] <= t_T[None, :, None], axis=-1)
        real_BxT = sid_BxT < K
        sid_BxT = jnp.where(real_BxT, sid_BxT, K - 1)
        gather_k = lambda x_BxK: take_rows(x_BxK, sid_BxT)
        off_BxT = t_T[None, :] - gather_k(start_BxK)
        n_BxT = gather_k(len_BxK)
        is_bos = real_BxT & (off_BxT == 0)
        is_tok = real_BxT & (off_BxT >= 1) & (off_BxT <= n_BxT)
        is_eos = real_BxT & (off_BxT == n_BxT + 1)
        flat_BxT = sid_BxT * L + jnp.clip(off_BxT - 1, 0, L - 1)

        def gather_tok(x_BxKxL):
            return take_rows(x_BxKxL.reshape(B, K * L), flat_BxT)

        row_BxT = flat_BxT + (jnp.arange(B) * (K * L))[:, None]

        def gather_lab(x_BxKxLxD):  # whole D-rows at once: one row gather
            x = x_BxKxLxD.reshape(B * K * L, D)[row_BxT]
            return jnp.where(is_tok[..., None], x, -1)

        tokens = jnp.where(is_tok, gather_tok(tok_BxKxL), self.pad_id)
        tokens = jnp.where(is_bos, self.bos_id, jnp.where(is_eos, self.eos_id, tokens))
        nxt_BxT = tokens[:, 1:]
        target_ok = ((nxt_BxT >= 1) & (nxt_BxT <= self.spec.num_sym)) | (nxt_BxT == self.eos_id)
        loss_mask = jnp.concatenate(
            [target_ok.astype(jnp.float32), jnp.zeros((B, 1), jnp.float32)], axis=1)
        labels = {
            "nt_ancestor": gather_lab(anc_BxKxLxD),
            "nt_boundary": gather_lab(bnd_BxKxLxD),
            "string_id": jnp.where(real_BxT, sid_BxT, -1),
            "corrupted": jnp.where(is_tok, gather_tok(rep_BxKxL), 0),
            "string_corrupted": jnp.where(real_BxT, gather_k(pert_BxK), 0),
            "overflow": overflow_B,
            "n_pad": jnp.sum(~real_BxT, axis=1).astype(jnp.int32),
        }
        return Batch(tokens.astype(jnp.int32), loss_mask, labels)


@functools.partial(jax.jit, static_argnums=(0, 2))
def _sample_jit(task: CFGTask, key: jax.Array, batch_size: int) -> Batch:
    return task._sample(key, batch_size)
