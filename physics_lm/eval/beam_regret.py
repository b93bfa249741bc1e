"""Retry upon regret on top of beam search (Part 2.2's "regret … beam 4" rows), one sentence at
a time.

Legend: B prompts · K beams · P prompt buffer · L = P + max_new token buffer · S most tokens of
one sentence.

A detector judges a whole, committed sentence, while beam search keeps K different prefixes
alive; so with K > 1 the solution is committed sentence by sentence. Every round, each row that
has not finished either
  - decodes its next sentence by beam search of width K from its committed prefix
    (`beam.beam_search` with ``.`` as a second stop token: the most probable sentence among
    the K beams), or, after a regret,
  - resamples the rejected sentence (multinomial at `hook.resample_temperature`, `generate`);
then the detector of `hook` (`regret.RegretHook`: v1/v2, the can_next probe on the row up to the
previous sentence, or vP, the judge) judges the new sentence exactly as the greedy hook does. On
regret, while retries remain, the sentence is erased and the row resamples it next round;
otherwise it stays and the next sentence is beam-decoded again. With K = 1 this is greedy decoding
with retry upon regret, the `RegretHook` decode of `regret_run.regret_decoder` (the same tokens
while nothing is regretted; resampling keys differ).

No cache is carried between rounds: each round prefills its decoders (and the probe detector)
with the committed rows, O(rounds · L) prefill tokens of parallel work beside the sentence's
K-wide steps. The carry records, like the hook's, `retries` int32[B] and `flags` int8[B, M].
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from physics_lm.config import ModelConfig
from physics_lm.data.igsm.gen.probe_names import name_len
from physics_lm.data.igsm.text.vocab import get_vocab
from physics_lm.eval.beam import beam_search
from physics_lm.eval.decode import DecodeResult, generate
from physics_lm.eval.regret import (
    RegretHook,
    Sentence,
    find_sentence,
    perfect_ready,
    probe_ready,
    record_verdicts,
)
from physics_lm.models.gpt2 import GPT2, init_cache


class RoundState(NamedTuple):
    tokens: jax.Array  # int32[B, L] committed rows
    length: jax.Array  # int32[B]
    eos: jax.Array  # bool[B] the row emitted EOS
    finished: jax.Array  # bool[B] EOS, or max_new tokens after the prompt
    resample: jax.Array  # bool[B] the next sentence is a retry (sampled, not beam-decoded)
    retries: jax.Array  # int32[B]
    flags: jax.Array  # int8[B, M] per sentence: -1 not asked, 0 kept, 1 regret (the last verdict)
    n_sent: jax.Array  # int32[B] sentences kept so far (BACK sentences included)
    round: jax.Array  # int32[]


def fresh_probe_ready(cfg: ModelConfig, layer: str, args: dict[str, Any],
                      tokens_BxL: jax.Array, s: Sentence) -> jax.Array:
    """`regret.probe_ready` with the detector's cache prefilled from the rows up to p (the `.`
    before each asked sentence) instead of carried along the decode."""
    model = GPT2(cfg, decode=True)
    B, L = tokens_BxL.shape
    idx_L = jnp.arange(L)
    pos_BxL = jnp.where(s.ask[:, None] & (idx_L[None] < s.define[:, None]), idx_L[None], -1)
    cache = init_cache(model, B, L + name_len() + 2)
    _, mut = model.apply({"params": args["params"], "cache": cache}, tokens_BxL,
                         positions_BxT=pos_BxL, mutable=["cache"])
    return probe_ready(cfg, layer, args, mut["cache"], tokens_BxL, s)


def _keep(tokens_BxL: jax.Array, length_B: jax.Array, pad_id: int) -> jax.Array:
    return jnp.where(jnp.arange(tokens_BxL.shape[1])[None] < length_B[:, None], tokens_BxL,
                     pad_id)


@functools.partial(jax.jit, static_argnames=(
    "cfg", "hook", "beam", "max_new", "eos_id", "pad_id", "sentence_len"))
def beam_regret(cfg: ModelConfig, params: Any, key: jax.Array, prompt_BxP: jax.Array,
                prompt_len_B: jax.Array, *, hook: RegretHook, hook_args: dict[str, Any],
                beam: int, max_new: int, eos_id: int, pad_id: int = 0,
                sentence_len: int = 40) -> DecodeResult:
    """Sentence-by-sentence beam search with retry upon regret (module docstring). `hook` gives
    the detector kind, retries and resampling temperature; `hook_args` as for the hook. Returns
    a DecodeResult (done = EOS emitted; logprob 0) whose aux holds `retries` and `flags`."""
    B, P = prompt_BxP.shape
    L = P + max_new
    if cfg.pos == "absolute" and cfg.max_len < L + sentence_len:
        raise ValueError(f"beam_regret: prompt buffer {P} + max_new {max_new} + one sentence "
                         f"{sentence_len} exceeds model.max_len={cfg.max_len} (learned absolute "
                         "positions: each round decodes after the whole committed buffer)")
    M = hook.max_sentences
    dot = get_vocab().word_to_id(".")
    stops = (eos_id, dot)
    prompt_len_B = prompt_len_B.astype(jnp.int32)
    sol_B = prompt_len_B - 1
    cap_B = prompt_len_B + max_new  # a row holds at most max_new tokens after its prompt
    tokens = jnp.pad(_keep(prompt_BxP.astype(jnp.int32), prompt_len_B, pad_id),
                     ((0, 0), (0, max_new)), constant_values=pad_id)
    state = RoundState(tokens, prompt_len_B, jnp.zeros((B,), bool), jnp.zeros((B,), bool),
                       jnp.zeros((B,), bool), jnp.zeros((B,), jnp.int32),
                       jnp.full((B, M), -1, jnp.int8), jnp.zeros((B,), jnp.int32),
                       jnp.zeros((), jnp.int32))
    wide = lambda st: jnp.pad(st.tokens, ((0, 0), (0, sentence_len)), constant_values=pad_id)

    def by_beam(st: RoundState) -> tuple[jax.Array, jax.Array]:
        out = beam_search(cfg, params, st.tokens, st.length, beam=beam, max_new=sentence_len,
                          eos_id=stops, pad_id=pad_id)
        return out.tokens, out.length

    def by_sampling(st: RoundState) -> tuple[jax.Array, jax.Array]:
        out = generate(cfg, params, jax.random.fold_in(key, st.round), st.tokens, st.length,
                       max_new=sentence_len, temperature=hook.resample_temperature,
                       eos_id=stops, pad_id=pad_id)
        return out.tokens, out.length

    def round_(st: RoundState) -> RoundState:
        live_B = ~st.finished
        same = lambda _: (wide(st), st.length)
        b_tok, b_len = jax.lax.cond(jnp.any(live_B & ~st.resample), by_beam, same, st)
        r_tok, r_len = jax.lax.cond(jnp.any(live_B & st.resample), by_sampling, same, st)
        pick = (live_B & st.resample)[:, None]
        new_tok = jnp.where(pick, r_tok, jnp.where(live_B[:, None], b_tok, wide(st)))
        new_len = jnp.where(live_B, jnp.where(st.resample, r_len, b_len), st.length)
        full_B = new_len >= cap_B
        new_len = jnp.minimum(new_len, cap_B)
        tokens = _keep(new_tok[:, :L], new_len, pad_id)
        rows = jnp.arange(B)
        progress_B = new_len > st.length
        eos_B = live_B & progress_B & (tokens[rows, new_len - 1] == eos_id)
        s = find_sentence(tokens, new_len, progress_B, sol_B)
        if hook.act:
            s = dataclasses.replace(s, ask=s.ask & (st.retries < hook.max_retries))
        if hook.kind == "probe":
            ready = lambda: fresh_probe_ready(cfg, hook.layer, hook_args, tokens, s)
        else:
            ready = lambda: perfect_ready(tokens, new_len, s)
        ready_B = jax.lax.cond(jnp.any(s.ask), ready, lambda: jnp.ones((B,), bool))
        regret_B = s.ask & ~ready_B
        flags = record_verdicts(st.flags, st.n_sent, s.ask, regret_B)
        n_sent = st.n_sent + s.ends
        retries, resample = st.retries, jnp.zeros((B,), bool)
        if hook.act:
            new_len = jnp.where(regret_B, s.define, new_len)
            tokens = _keep(tokens, new_len, pad_id)
            n_sent, retries, resample = n_sent - regret_B, retries + regret_B, regret_B
        stuck_B = live_B & ~progress_B  # nothing could be added (the buffer is full)
        finished = st.finished | eos_B | (full_B & ~regret_B) | stuck_B
        return RoundState(tokens, new_len, st.eos | eos_B, finished, resample, retries, flags,
                          n_sent, st.round + 1)

    # each round adds >= 1 token to a live row or spends one of its retries
    rounds = max_new + (hook.max_retries if hook.act else 0)
    state = jax.lax.while_loop(lambda st: (st.round < rounds) & ~jnp.all(st.finished),
                               round_, state)
    return DecodeResult(state.tokens, state.length, prompt_len_B, state.eos,
                        jnp.zeros((B,), jnp.float32),
                        {"retries": state.retries, "flags": state.flags})
