"""Teacher-forced loss of a cell's reference solutions, by kind of token.

Accuracy says whether a generation is right; this says which decisions the model still gets wrong
when it is fed the reference solution, so a run that is not there yet says why. Every predicted
token of the solution, the answer and the closing <eos> (the training loss mask, `loss_on=
"solution"`: the kinds partition it, so their summed loss is the training loss on those rows)
gets one kind:

  name_first  the first word of a parameter's name after "Define": which parameter comes next.
              Several parameters may be ready and the reference picks one of them at random, so
              part of this loss cannot be learned.
  name_rest   the remaining words of the name.
  stop        the token after a sentence's ".": "Define" (go on) or <answer> (stop there).
  symbol_new  a variable letter's first use: drawn uniformly from the unused letters, so its
              floor (`symbol_new_floor`) is log(52 - letters used so far).
  symbol_ref  a later use of a letter (which variable holds which value).
  operand     a number that restates a variable's value inside a computation (`3 + 2` of
              `q = p + 2 = 3 + 2 = 5`): recall.
  result_arith  the number that ends a step with a sign in it (`5` above): the arithmetic.
  result_read   the number that ends a step without one (`3` of `so p = 3`, `5` of
              `so B = q = 5`): a value read from the problem's statement or copied.
  answer      the number after <answer>.
  syntax      everything else: the first "Define", "as", ";", "so", "=", the signs, ".", "BACK",
              <eos>.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from physics_lm.config import ModelConfig
from physics_lm.data.igsm.text.vocab import Vocab, get_vocab
from physics_lm.models.gpt2 import GPT2

KINDS = ("name_first", "name_rest", "stop", "symbol_new", "symbol_ref", "operand", "result_arith",
         "result_read", "answer", "syntax")
_LOGIT_BUDGET = 1 << 26  # floats of logits per forward (rows x T x V): 256 MB in float32


def solution_mask(tokens_BxT: np.ndarray, sol_pos_B: np.ndarray, eos_id: int) -> np.ndarray:
    """bool[B, T-1]: position t predicts token t+1 of the solution, answer or <eos> (from the
    <solution> marker at `sol_pos` to the first <eos> after it, or the row's end)."""
    T = tokens_BxT.shape[1]
    t = np.arange(T - 1)[None, :]
    after = np.arange(T)[None, :] > sol_pos_B[:, None]
    eos = np.where(((tokens_BxT == eos_id) & after).any(1),
                   np.argmax((tokens_BxT == eos_id) & after, axis=1), T - 1)
    return (t >= sol_pos_B[:, None]) & (t < eos[:, None])


def token_kinds(tokens_BxT: np.ndarray, mask_BxT1: np.ndarray, vocab: Vocab | None = None
                ) -> tuple[np.ndarray, np.ndarray]:
    """(kind index into KINDS or -1, int8[B, T-1]; symbol_new floor in nats or 0, float32[B, T-1])
    of every predicted token t+1 where `mask_BxT1[:, t]` (module docstring)."""
    vocab = vocab or get_vocab()
    define, as_, period, semi = (vocab.word_to_id(w) for w in ("Define", "as", ".", ";"))
    letters, numbers = set(vocab.letter_ids), set(vocab.number_ids)
    signs = {vocab.word_to_id(w) for w in ("+", "-", "*")}
    B, T1 = mask_BxT1.shape
    kinds = np.full((B, T1), -1, np.int8)
    floor = np.zeros((B, T1), np.float32)
    k = {name: i for i, name in enumerate(KINDS)}
    rows, cols = np.nonzero(mask_BxT1)
    # per row, a left-to-right walk over its weighed positions (row-major order from nonzero)
    in_name, used, last_row, signed = False, set(), -1, False
    for b, t in zip(rows.tolist(), cols.tolist(), strict=True):
        prev, tok = int(tokens_BxT[b, t]), int(tokens_BxT[b, t + 1])
        if b != last_row or prev == vocab.sol_id:  # a new solution: nothing defined yet
            in_name, used, last_row = False, set(), b
        if prev in (period, semi, vocab.sol_id):  # a new step
            signed = False
        signed = signed or tok in signs
        if prev == define:
            kind, in_name = "name_first", tok != as_
        elif in_name:
            in_name = tok != as_
            kind = "name_rest" if in_name else "syntax"
        elif prev == period:
            kind = "stop"
        elif prev == vocab.ans_id:
            kind = "answer"
        elif tok in letters:
            kind = "symbol_ref" if tok in used else "symbol_new"
            if tok not in used:
                floor[b, t] = math.log(len(letters) - len(used))
                used.add(tok)
        elif tok in numbers:
            after = int(tokens_BxT[b, t + 2]) if t + 2 < tokens_BxT.shape[1] else -1
            if after in (period, semi):
                kind = "result_arith" if signed else "result_read"
            else:
                kind = "operand"
        else:
            kind = "syntax"
        kinds[b, t] = k[kind]
    return kinds, floor


@functools.lru_cache(maxsize=8)
def _scorer(model_cfg: ModelConfig):
    model = GPT2(model_cfg)

    @jax.jit
    def score(params: Any, tokens_BxT: jax.Array) -> tuple[jax.Array, jax.Array]:
        logits_BxTxV, _ = model.apply({"params": params}, tokens_BxT)
        logits_BxT1xV = logits_BxTxV[:, :-1].astype(jnp.float32)
        nll = optax.softmax_cross_entropy_with_integer_labels(logits_BxT1xV, tokens_BxT[:, 1:])
        return nll, jnp.argmax(logits_BxT1xV, -1) == tokens_BxT[:, 1:]

    return score


def per_token(model_cfg: ModelConfig, params: Any, tokens_BxT: np.ndarray
              ) -> tuple[np.ndarray, np.ndarray]:
    """(next-token NLL float32[B, T-1], argmax hit bool[B, T-1]) of the model on `tokens`, in
    chunks of rows whose logits stay within `_LOGIT_BUDGET` floats (the last chunk padded)."""
    B, T = tokens_BxT.shape
    rows = max(1, min(B, _LOGIT_BUDGET // (T * model_cfg.vocab_size)))
    score = _scorer(model_cfg)
    nll, hit = [], []
    for start in range(0, B, rows):
        idx = np.arange(start, start + rows) % B  # one shape for every chunk
        a, h = jax.device_get(score(params, jnp.asarray(tokens_BxT[idx], jnp.int32)))
        nll.append(a[: B - start])
        hit.append(h[: B - start])
    return np.concatenate(nll)[:B], np.concatenate(hit)[:B]


def summarize(nll_BxT1: np.ndarray, hit_BxT1: np.ndarray, kinds_BxT1: np.ndarray,
              floor_BxT1: np.ndarray) -> dict[str, Any]:
    """{"tokens", "nll" (mean per weighed token), "kinds": {kind: {tokens, nll, share of the
    summed loss, top1}}, "symbol_new_floor"}: the kinds partition the weighed tokens."""
    weighed = kinds_BxT1 >= 0
    total = float(nll_BxT1[weighed].sum())
    out: dict[str, Any] = {"tokens": int(weighed.sum()),
                           "nll": total / max(int(weighed.sum()), 1), "kinds": {}}
    for i, name in enumerate(KINDS):
        sel = kinds_BxT1 == i
        n = int(sel.sum())
        out["kinds"][name] = {
            "tokens": n, "nll": float(nll_BxT1[sel].mean()) if n else None,
            "share": float(nll_BxT1[sel].sum()) / total if n and total > 0 else None,
            "top1": float(hit_BxT1[sel].mean()) if n else None}
    new = kinds_BxT1 == KINDS.index("symbol_new")
    out["symbol_new_floor"] = float(floor_BxT1[new].mean()) if new.any() else None
    return out


def describe(table: dict[str, Any]) -> str:
    """One line: each kind's mean loss and its share of the summed loss."""
    return ", ".join(f"{k} {v['nll']:.2f} ({v['share']:.0%})"
                     for k, v in table["kinds"].items() if v["tokens"] and v["share"] is not None)


def teacher_forced(model_cfg: ModelConfig, params: Any, tokens_BxT: np.ndarray,
                   sol_pos_B: np.ndarray) -> dict[str, Any]:
    """The module's table for one cell's problems (their sampled reference solutions)."""
    vocab = get_vocab()
    mask = solution_mask(tokens_BxT, sol_pos_B, vocab.eos_id)
    kinds, floor = token_kinds(tokens_BxT, mask, vocab)
    nll, hit = per_token(model_cfg, params, tokens_BxT)
    return summarize(nll, hit, kinds, floor)
