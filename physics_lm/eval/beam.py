"""Beam search over the KV-cached decoder (the baseline decoder of Part 2.2's comparisons).

Legend: B prompts · K beams per prompt · P prompt buffer · L = P + max_new · V vocab.

Each beam is a row of the cached decoder (`decode.py`'s layout): B·K rows, prompt b's beams at
rows b·K … b·K + K − 1. The prompt is prefilled once per prompt and the cache repeated K times.
Every step scores each live beam's V continuations by the sum of log-probabilities, keeps the
K best of the K·V candidates per prompt, and gathers tokens, lengths and cache rows from their
parents. A beam that emitted EOS is finished: its only continuation is itself, unchanged, so
finished and live beams compete for the K slots. Scores are `logprob / gen_len ** length_penalty`
(0 = the most probable sequence; Hugging Face's default is 1).

With length_penalty 0 the search stops as soon as, for every prompt, the best finished beam
scores at least the best live one (a live beam's log-probability only falls). K = 1 is greedy
decoding; K ≥ (number of candidate strings) is exhaustive, which the tests use.
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from physics_lm.config import ModelConfig
from physics_lm.eval import decode
from physics_lm.eval.decode import DecodeResult, cached_backend, segment_ends, segmented_while


class BeamState(NamedTuple):
    tokens: jax.Array  # int32[B*K, L]
    length: jax.Array  # int32[B*K]
    done: jax.Array  # bool[B*K]
    logprob: jax.Array  # float32[B*K] sum of log p of the generated tokens (-inf: empty slot)
    logits: jax.Array  # float32[B*K, V] after each row's last token
    step: jax.Array  # int32[]
    cache: Any


def _score(logprob: jax.Array, gen_len: jax.Array, length_penalty: float) -> jax.Array:
    if length_penalty == 0:
        return logprob
    return logprob / jnp.maximum(gen_len, 1).astype(jnp.float32) ** length_penalty


def _gather_rows(tree: Any, rows: jax.Array, n: int) -> Any:
    """Every leaf with a leading axis of n rows, reordered by `rows` (cache indices pass)."""
    return jax.tree.map(lambda x: x[rows] if x.ndim and x.shape[0] == n else x, tree)


@functools.partial(jax.jit, static_argnames=(
    "cfg", "beam", "max_new", "eos_id", "pad_id", "length_penalty"))
def beam_search(cfg: ModelConfig, params: Any, prompt_BxP: jax.Array, prompt_len_B: jax.Array,
                *, beam: int, max_new: int, eos_id: int | tuple[int, ...], pad_id: int = 0,
                length_penalty: float = 0.0) -> DecodeResult:
    """The best of `beam` beams per prompt (module docstring); a DecodeResult with B rows whose
    `logprob` is the chosen beam's sum of log p (not the penalised score). `eos_id` may be a
    tuple of ids that each finish a beam (as in `decode.generate`)."""
    B, P = prompt_BxP.shape
    K, L = beam, P + max_new
    if cfg.pos == "absolute" and cfg.max_len < L:
        raise ValueError(f"prompt buffer {P} + max_new {max_new} exceeds model.max_len="
                         f"{cfg.max_len} (learned absolute positions)")
    prompt_len_B = prompt_len_B.astype(jnp.int32)
    in_prompt = jnp.arange(P)[None, :] < prompt_len_B[:, None]
    prompt_BxP = jnp.where(in_prompt, prompt_BxP, pad_id).astype(jnp.int32)
    ends = segment_ends(max_new)  # the cache grows as in `generate`: a step reads and
    cache, logits_BxV, forward = cached_backend(  # reorders only the slots that can be filled
        cfg, params, prompt_BxP, prompt_len_B, P + ends[0])
    rep = lambda x: jnp.repeat(x, K, axis=0)
    N = B * K
    first_K = jnp.where(jnp.arange(K) == 0, 0.0, -jnp.inf)  # one live beam at the start
    state = BeamState(
        tokens=rep(jnp.pad(prompt_BxP, ((0, 0), (0, max_new)), constant_values=pad_id)),
        length=rep(prompt_len_B), done=jnp.zeros((N,), bool),
        logprob=jnp.tile(first_K, B), logits=rep(logits_BxV), step=jnp.zeros((), jnp.int32),
        cache=_gather_rows(cache, jnp.repeat(jnp.arange(B), K), B))
    gen_len = lambda s: s.length - rep(prompt_len_B)

    def step(s: BeamState) -> BeamState:
        V = s.logits.shape[-1]
        logp_NxV = jax.nn.log_softmax(s.logits.astype(jnp.float32), axis=-1)
        # A finished beam continues only as itself (column 0 stands for "unchanged").
        stay_V = jnp.where(jnp.arange(V) == 0, 0.0, -jnp.inf)
        cand_NxV = s.logprob[:, None] + jnp.where(s.done[:, None], stay_V[None, :], logp_NxV)
        new_len_NxV = gen_len(s)[:, None] + (~s.done[:, None]).astype(jnp.int32)
        score_BxKV = _score(cand_NxV, new_len_NxV, length_penalty).reshape(B, K * V)
        _, pick_BxK = jax.lax.top_k(score_BxKV, K)
        parent_N = (jnp.arange(B)[:, None] * K + pick_BxK // V).reshape(N)
        token_N = (pick_BxK % V).reshape(N).astype(jnp.int32)
        was_done = s.done[parent_N]
        s = _gather_rows(s, parent_N, N)
        logprob = cand_NxV.reshape(B, K * V)[jnp.arange(B)[:, None], pick_BxK].reshape(N)
        rows = jnp.arange(N)
        tokens = s.tokens.at[rows, s.length].set(
            jnp.where(was_done, s.tokens[rows, s.length], token_N), mode="drop")
        s = s._replace(tokens=tokens, length=s.length + (~was_done).astype(jnp.int32),
                       done=was_done | decode.is_stop(token_N, eos_id), logprob=logprob,
                       step=s.step + 1)
        cache, logits = forward(s.cache, s.tokens, s.length)
        return s._replace(cache=cache, logits=logits)

    def running(s: BeamState) -> jax.Array:
        live = ~s.done & jnp.isfinite(s.logprob)
        if length_penalty == 0:  # a live beam's log p only falls: stop once a finished one leads
            best_done = jnp.max(jnp.where(s.done, s.logprob, -jnp.inf).reshape(B, K), axis=1)
            best_live = jnp.max(jnp.where(live, s.logprob, -jnp.inf).reshape(B, K), axis=1)
            settled = jnp.all(best_done >= best_live)
        else:
            settled = ~jnp.any(live)
        return (s.step < max_new) & ~settled

    s = segmented_while(running, step, state, P, ends)
    # Finished beams first (a live beam was cut by max_new), then the best score.
    score_BxK = _score(s.logprob, gen_len(s), length_penalty).reshape(B, K)
    key_BxK = jnp.where(s.done.reshape(B, K), score_BxK, score_BxK - 1e30)
    best_N = jnp.arange(B) * K + jnp.argmax(key_BxK, axis=1)
    return DecodeResult(s.tokens[best_N], s.length[best_N], prompt_len_B, s.done[best_N],
                        s.logprob[best_N])
