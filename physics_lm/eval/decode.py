"""Batched autoregressive sampling: KV-cached, and a full-recompute reference with equal tokens.

Legend: B batch · P prompt buffer length · L = P + max_new token buffer · V vocab · S cache slots.

Layout. Prompts come *left-aligned* in `prompt_BxP` with per-row lengths `prompt_len_B` (>= 1;
the caller puts BOS first). Row b's tokens stay contiguous in the `tokens` buffer: its prompt,
then what it generated, then pad, so its token r sits at position r whatever other rows hold.
The cache keeps the prompt buffer's slots (prefill is one chunk of P tokens), but gives the pad
slots of short prompts position -1, which the attention treats as an empty slot; the next token
of row b is fed at slot P + step with its own position `length_b - 1`. So ragged prompts need no
left padding and no per-row offsets, for every position scheme (the model takes explicit
per-row positions).

Cache size. The cache starts with P + 64 slots and grows between loop segments
(`segment_ends`), up to P + the step bound: a step attends over every slot and is bound by
reading them, so slots that no step has filled yet would be read for nothing. (With one cache
of P + 512 slots, stored [B, S, H, K] and transposed by XLA:CPU at every step, this decoder
ran at 0.46x Hugging Face's tokens/s; `benchmarks/decode_vs_hf.py`.)

Stopping. A row that samples `eos_id` is done: it keeps the EOS and emits `pad_id` after it.
`eos_id` may also be a tuple of ids, any of which ends a row (retry upon regret with beams
decodes one solution sentence at a time: ``.`` or EOS, `eval/beam_regret.py`).
The loop (`lax.while_loop`, all inside one jit) ends when every row is done or after `max_new`
steps; rows without EOS by then are cut (`done` False).

Keys. Step s samples every row with `fold_in(key, s)`, identically in both samplers, so the cached
and the recompute sampler give the same tokens for the same key (up to float ties).

Hooks (Part 2.2 "retry upon regret", `eval/regret.py`). `decode_step` is: sample from the
current logits, append, call `hook.step(state, hook_args) -> state`, then run the model on each
row's *last* token at position `length - 1`. A hook may therefore erase tokens with `rewind`: it
truncates rows and empties the cache slots at positions >= the new length - 1, and the forward
that follows recomputes the logits after the kept prefix. Sampling keys follow the step count,
not the row length, so a retried position draws fresh randomness. A hook is a static (hashable)
object; what it computes with (a detector's params) comes in as the traced `hook_args`, and its
own loop state lives in `state.aux` (`hook.init`). It may also change a row's temperature
(`state.temperature`, float32[B]), e.g. to resample a rejected sentence. With rewinds a row needs
more steps than tokens: `max_steps` (default `max_new`) bounds the steps and the cache slots,
`max_new` the tokens a row may hold.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any, NamedTuple, Protocol

import jax
import jax.numpy as jnp

from physics_lm.config import ModelConfig
from physics_lm.models.gpt2 import GPT2, grow_cache, init_cache


class DecodeState(NamedTuple):
    """The while-loop carry (a pytree). B rows, L = P + max_new buffer, V vocab.

    Attributes:
      tokens: int32[B, L] prompt + generated tokens, left-aligned, pad after `length`.
      length: int32[B] tokens in each row so far.
      done: bool[B], the row has emitted EOS.
      logprob: float32[B] sum of log q(token) of the sampled tokens under the *sampling*
        distribution (temperature and top-k applied; 0 for greedy). At temperature 1 without
        top-k, -logprob is an unbiased estimate of the model's string entropy. Tokens a hook
        erased stay counted.
      logits: float32[B, V] next-token logits after each row's last token.
      step: int32[] steps taken.
      cache: the KV cache collection (None for the recompute sampler).
      temperature: float32[B] each row's sampling temperature (<= 0: greedy); hooks may change it.
      aux: the hook's own carry (None without a hook).
    """

    tokens: jax.Array
    length: jax.Array
    done: jax.Array
    logprob: jax.Array
    logits: jax.Array
    step: jax.Array
    cache: Any
    temperature: jax.Array
    aux: Any = None


class DecodeResult(NamedTuple):
    """Output of `generate` (shapes as in DecodeState; prompt_len int32[B]).

    Row b's completion is tokens[b, prompt_len[b]:length[b]], its EOS included when done[b].
    `aux` is the hook's final carry (None without a hook).
    """

    tokens: jax.Array
    length: jax.Array
    prompt_len: jax.Array
    done: jax.Array
    logprob: jax.Array
    aux: Any = None


class Hook(Protocol):
    """What `generate` calls inside its loop; must be hashable (it is a static argument)."""

    def init(self, args: Any, prompt_BxP: jax.Array, prompt_len_B: jax.Array,
             slots: int) -> Any:
        """The initial `state.aux`."""

    def step(self, state: DecodeState, args: Any) -> DecodeState:
        """Called after each token is appended, before the model's next forward."""


@dataclasses.dataclass(frozen=True)
class FnHook:
    """A stateless hook from a function `state -> state` (hashed by the function's identity)."""

    fn: Callable[[DecodeState], DecodeState]

    def init(self, args: Any, prompt_BxP: jax.Array, prompt_len_B: jax.Array,
             slots: int) -> Any:
        return None

    def step(self, state: DecodeState, args: Any) -> DecodeState:
        return self.fn(state)

# forward(cache, tokens_BxL, length_B) -> (cache, logits_BxV after each row's last token)
Forward = Callable[[Any, jax.Array, jax.Array], tuple[Any, jax.Array]]


def sample_logits(key: jax.Array, logits_BxV: jax.Array, temperature: float | jax.Array,
                  top_k: int = 0) -> tuple[jax.Array, jax.Array]:
    """Draws one token per row; temperature (a scalar or float32[B]) <= 0 means greedy (argmax).

    Temperature is traced, so one compiled decoder serves every temperature.

    Returns:
      (token_B int32, logprob_B float32 under the sampling distribution; 0 when greedy).
    """
    logits_BxV = logits_BxV.astype(jnp.float32)
    if top_k:
        kth_Bx1 = jax.lax.top_k(logits_BxV, top_k)[0][:, -1:]
        logits_BxV = jnp.where(logits_BxV < kth_Bx1, -jnp.inf, logits_BxV)
    t_B = jnp.broadcast_to(jnp.asarray(temperature, jnp.float32), logits_BxV.shape[:1])
    greedy_B = t_B <= 0
    scaled_BxV = logits_BxV / jnp.where(greedy_B, 1.0, t_B)[:, None]
    sampled_B = jax.random.categorical(key, scaled_BxV, axis=-1)
    token_B = jnp.where(greedy_B, jnp.argmax(logits_BxV, axis=-1), sampled_B).astype(jnp.int32)
    logp_B = jnp.take_along_axis(jax.nn.log_softmax(scaled_BxV), token_B[:, None], 1)[:, 0]
    return token_B, jnp.where(greedy_B, 0.0, logp_B)


def invalidate_from(cache: Any, pos_B: jax.Array) -> Any:
    """Empties every cache slot whose position is >= pos_B[b] (row-wise); None passes through."""
    if cache is None:
        return None

    def fix(path, x):
        if jax.tree_util.keystr(path).endswith("'cached_pos']"):
            return jnp.where(x >= pos_B[:, None], -1, x)
        return x

    return jax.tree_util.tree_map_with_path(fix, cache)


def rewind(state: DecodeState, new_length_B: jax.Array, pad_id: int = 0) -> DecodeState:
    """Truncates row b to new_length_B[b] tokens (>= its prompt) so decoding resumes there.

    Rows with new_length_B == length_B are untouched. Meant to be called from a step hook, before
    the forward that recomputes the logits after the kept prefix (see the module docstring).
    """
    L = state.tokens.shape[1]
    cut_B = jnp.minimum(new_length_B, state.length)
    keep_BxL = jnp.arange(L)[None, :] < cut_B[:, None]
    return state._replace(
        tokens=jnp.where(keep_BxL, state.tokens, pad_id),
        length=cut_B,
        done=state.done & (cut_B == state.length),
        cache=invalidate_from(state.cache, cut_B - 1))


def is_stop(token: jax.Array, eos_id: int | tuple[int, ...]) -> jax.Array:
    """bool, same shape: the token ends a row (`eos_id` one id or a tuple of them)."""
    ids = eos_id if isinstance(eos_id, tuple) else (eos_id,)
    return functools.reduce(jnp.logical_or, [token == i for i in ids])


def decode_step(state: DecodeState, key: jax.Array, forward: Forward, *, top_k: int,
                eos_id: int | tuple[int, ...], pad_id: int, hook: Hook | None = None,
                hook_args: Any = None) -> DecodeState:
    """One token for every unfinished row: sample, append, hook, then the model's next logits."""
    B, L = state.tokens.shape
    token_B, logp_B = sample_logits(jax.random.fold_in(key, state.step), state.logits,
                                    state.temperature, top_k)
    active_B = ~state.done & (state.length < L)
    token_B = jnp.where(active_B, token_B, pad_id)
    tokens_BxL = state.tokens.at[jnp.arange(B), state.length].set(
        jnp.where(active_B, token_B, state.tokens[jnp.arange(B), state.length]),
        mode="drop")
    state = state._replace(
        tokens=tokens_BxL,
        length=state.length + active_B.astype(jnp.int32),
        done=state.done | (active_B & is_stop(token_B, eos_id)),
        logprob=state.logprob + jnp.where(active_B, logp_B, 0.0),
        step=state.step + 1)
    if hook is not None:
        state = hook.step(state, hook_args)
    cache, logits_BxV = forward(state.cache, state.tokens, state.length)
    return state._replace(cache=cache, logits=logits_BxV)


def segment_ends(steps: int, first: int = 64) -> tuple[int, ...]:
    """Step counts at which the decoder's cache grows: doubling from `first`, then `steps`.

    A step attends over every slot of the cache, so a cache sized to the longest buffer made
    the early steps read keys that do not exist yet. Doubling reads ≈1.3x the filled slots over
    a long run and compiles log2(steps / first) + 1 loop bodies; 8 finer sizes at 512 steps
    (≈1.1x) measured no faster here and compiled 1.8x longer (`benchmarks/decode_vs_hf.py`)."""
    ends = [min(first, steps)]
    while ends[-1] < steps:
        ends.append(min(2 * ends[-1], steps))
    return tuple(ends)


def segmented_while(running: Callable[[Any], jax.Array], body: Callable[[Any], Any], state: Any,
                    P: int, ends: tuple[int, ...], grow: bool = True) -> Any:
    """`lax.while_loop(step < ends[-1] & running, body)` as one loop per `ends` segment, the
    carry's `cache` grown to P + end before each (a step at index P + s < P + end has its slot).
    The carry is any NamedTuple with `step` and `cache` (the sampler's, beam search's)."""
    for end in ends:
        if grow:
            state = state._replace(cache=grow_cache(state.cache, P + end))
        state = jax.lax.while_loop(lambda s, end=end: (s.step < end) & running(s), body, state)
    return state


def _last(x_BxTxV: jax.Array, length_B: jax.Array) -> jax.Array:
    return jnp.take_along_axis(x_BxTxV, (length_B - 1)[:, None, None], axis=1)[:, 0]


def cached_backend(cfg: ModelConfig, params: Any, prompt_BxP: jax.Array,
                    prompt_len_B: jax.Array, slots: int) -> tuple[Any, jax.Array, Forward]:
    """Prefills the cache with the prompt in one chunk; returns (cache, logits_BxV, forward)."""
    model = GPT2(cfg, decode=True)
    B, P = prompt_BxP.shape
    pos_P = jnp.arange(P, dtype=jnp.int32)
    pos_BxP = jnp.where(pos_P[None, :] < prompt_len_B[:, None], pos_P[None, :], -1)
    (logits_BxPxV, _), mut = model.apply(
        {"params": params, "cache": init_cache(model, B, slots)}, prompt_BxP,
        positions_BxT=pos_BxP, prefill=True, mutable=["cache"])  # model.attention's kernel

    def forward(cache, tokens_BxL, length_B):
        last_Bx1 = (length_B - 1)[:, None]
        (logits_Bx1xV, _), mut = model.apply(
            {"params": params, "cache": cache}, jnp.take_along_axis(tokens_BxL, last_Bx1, 1),
            positions_BxT=last_Bx1, mutable=["cache"])
        return mut["cache"], logits_Bx1xV[:, 0]

    return mut["cache"], _last(logits_BxPxV, prompt_len_B), forward


def _recompute_backend(cfg: ModelConfig, params: Any) -> Forward:
    model = GPT2(cfg)

    def forward(cache, tokens_BxL, length_B):
        logits_BxLxV, _ = model.apply({"params": params}, tokens_BxL)
        return cache, _last(logits_BxLxV, length_B)

    return forward


@functools.partial(jax.jit, static_argnames=(
    "cfg", "max_new", "top_k", "eos_id", "pad_id", "hook", "use_cache", "max_steps"))
def generate(cfg: ModelConfig, params: Any, key: jax.Array, prompt_BxP: jax.Array,
             prompt_len_B: jax.Array, *, max_new: int, temperature: float | jax.Array = 1.0,
             top_k: int = 0, eos_id: int | tuple[int, ...], pad_id: int = 0,
             hook: Hook | None = None,
             hook_args: Any = None, use_cache: bool = True, max_steps: int = 0
             ) -> DecodeResult:
    """Samples up to `max_new` tokens after each row's prompt (layout: module docstring).

    Args:
      cfg: the model's config (vocab resolved); static.
      params: the model's params.
      key: jax.random key; step s uses fold_in(key, s).
      prompt_BxP: int32 left-aligned prompts (BOS first), pad after prompt_len_B.
      prompt_len_B: int32 prompt lengths, 1..P.
      max_new: most tokens a row holds after its prompt (EOS included); buffer P + max_new.
      temperature: traced, a scalar or float32[B]; <= 0 is greedy.
      top_k: keep the k largest logits (0 = all); static.
      eos_id: the id that ends a row, or a tuple of such ids (use -1 to never stop early, e.g.
        for benchmarks).
      pad_id: what finished rows emit.
      hook: optional static `Hook` called inside every step (see `decode_step`); `hook_args`
        its traced inputs.
      use_cache: False runs the reference sampler, a full forward of the L-token buffer per step.
      max_steps: most decoding steps (0 = max_new); more than max_new when a hook rewinds.

    Returns:
      DecodeResult.
    """
    B, P = prompt_BxP.shape
    L = P + max_new
    steps = max(max_steps, max_new)
    if cfg.pos == "absolute" and cfg.max_len < L:
        raise ValueError(f"prompt buffer {P} + max_new {max_new} exceeds model.max_len="
                         f"{cfg.max_len} (learned absolute positions)")
    prompt_len_B = prompt_len_B.astype(jnp.int32)
    in_prompt_BxP = jnp.arange(P)[None, :] < prompt_len_B[:, None]
    tokens_BxL = jnp.pad(jnp.where(in_prompt_BxP, prompt_BxP, pad_id).astype(jnp.int32),
                         ((0, 0), (0, max_new)), constant_values=pad_id)
    ends = segment_ends(steps) if use_cache else (steps,)
    if use_cache:
        cache, logits_BxV, forward = cached_backend(cfg, params, prompt_BxP.astype(jnp.int32),
                                                     prompt_len_B, P + ends[0])
    else:
        forward = _recompute_backend(cfg, params)
        cache, logits_BxV = forward(None, tokens_BxL, prompt_len_B)
    aux = None if hook is None else hook.init(hook_args, prompt_BxP, prompt_len_B, P + steps)
    temp_B = jnp.broadcast_to(jnp.asarray(temperature, jnp.float32), (B,))
    state = DecodeState(tokens_BxL, prompt_len_B, jnp.zeros((B,), bool), jnp.zeros((B,)),
                        logits_BxV, jnp.zeros((), jnp.int32), cache, temp_B, aux)
    body = functools.partial(decode_step, key=key, forward=forward, top_k=top_k, eos_id=eos_id,
                             pad_id=pad_id, hook=hook, hook_args=hook_args)
    state = segmented_while(lambda s: ~jnp.all(s.done | (s.length >= L)), body, state, P, ends,
                            grow=use_cache)
    return DecodeResult(state.tokens, state.length, prompt_len_B, state.done,
                        state.logprob, state.aux)


def completions(result: DecodeResult) -> list[tuple[list[int], bool]]:
    """Host view: per row (generated tokens without the EOS, whether EOS was emitted)."""
    tokens, length, start, done = jax.device_get(
        (result.tokens, result.length, result.prompt_len, result.done))
    out = []
    for b in range(tokens.shape[0]):
        end = int(length[b]) - int(bool(done[b]))
        out.append((tokens[b, int(start[b]):end].tolist(), bool(done[b])))
    return out
