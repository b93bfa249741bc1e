"""Retry upon regret (Part 2.2 §3): a decoder hook that asks a mistake detector after every
solution sentence and, on regret, erases the sentence and samples it again.

Legend: B rows · L token buffer · S cache slots · Q query length (``<start> name <end>``) ·
D width · M most sentences recorded per row.

After a row appends the ``.`` that ends a solution sentence ``Define X as ...`` (not a
``BACK`` sentence, before ``<answer>``), the hook asks whether X was ready to be computed at the
end of the previous sentence (position p, the ``.`` before ``Define`` or ``<solution>``):

- `kind="probe"` (detectors v1/v2): the `can_next` V-probe of Part 2.1
  (`probing/regret_detector.py`).
  Its model (the LM with the probe's low-rank update merged) keeps its own KV cache, fed one token
  per step beside the LM's. To ask, the query ``<start> X <end>`` is run at positions p+1.. on a
  *copy* of that cache whose slots after p are emptied: the copy is discarded, so the query sees
  exactly the row up to p and itself -- the truncated input the probe was trained on
  (`probing/igsm_queries.py`), without recomputing the row. "Not ready" = regret.
- `kind="perfect"` (vP): the judge's ground truth for the step (`text/judge.py`): regret iff the
  sentence is the first wrong one. The judge is host code; it runs through `jax.pure_callback`
  inside the decoding loop (only at steps where some row ended a sentence).

On regret (and while the row has retries left, `max_retries` per solution) the row is rewound to
the end of the previous sentence (`decode.rewind`) and that sentence is resampled at
`resample_temperature` (multinomial, the paper's choice); once a sentence ends without regret the
row returns to its base temperature (greedy by default). With `act=False` the hook only records
the verdicts (`flags`), which measures a detector on the model's own greedy generations.

Carry (`state.aux`, returned in `DecodeResult.aux`): retries int32[B], flags int8[B, M] (per
sentence index, BACK sentences counted: -1 not asked, 0 no regret, 1 regret; the last verdict if
a sentence was retried), and the bookkeeping below.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from physics_lm.config import ModelConfig
from physics_lm.data.igsm.gen.probe_names import name_len
from physics_lm.data.igsm.text.judge import judge_problem, split_steps
from physics_lm.data.igsm.text.parser import parse_problem
from physics_lm.data.igsm.text.vocab import get_vocab
from physics_lm.eval.decode import DecodeState, invalidate_from, rewind
from physics_lm.models.gpt2 import GPT2, init_cache
from physics_lm.probing import heads
from physics_lm.probing import train_probe as tp

KINDS = ("probe", "perfect")
_NEVER = jnp.iinfo(jnp.int32).max


@dataclasses.dataclass(frozen=True)
class Sentence:
    """Where the sentence that row b just finished sits (int32[B] each)."""

    ends: jax.Array  # bool: a solution sentence ended at this step
    ask: jax.Array  # bool: it is a well-formed ``Define X as ...`` sentence (not BACK)
    define: jax.Array  # index of its ``Define``; p = define - 1
    name_len: jax.Array  # tokens of X (``Define`` + 1 .. ``as`` - 1)


def find_sentence(tokens_BxL: jax.Array, length_B: jax.Array, appended_B: jax.Array,
                  sol_B: jax.Array) -> Sentence:
    """Locates the sentence each row just ended (module docstring), all rows at once."""
    v = get_vocab()
    B, L = tokens_BxL.shape
    rows, idx_L = jnp.arange(B), jnp.arange(L)
    last_B = length_B - 1
    dot = v.word_to_id(".")
    live_BxL = idx_L[None] <= last_B[:, None]
    in_sol_B = ~jnp.any((tokens_BxL == v.ans_id) & live_BxL, axis=1)
    ends_B = appended_B & (tokens_BxL[rows, last_B] == dot) & in_sol_B & (last_B > sol_B)
    body_BxL = (idx_L[None] > sol_B[:, None]) & (idx_L[None] < last_B[:, None])
    d_B = jnp.max(jnp.where(body_BxL & (tokens_BxL == v.word_to_id("Define")), idx_L, -1), 1)
    after_BxL = body_BxL & (idx_L[None] > d_B[:, None])
    a_B = jnp.min(jnp.where(after_BxL & (tokens_BxL == v.word_to_id("as")), idx_L, L), 1)
    n_B = a_B - d_B - 1
    before_B = tokens_BxL[rows, jnp.maximum(d_B - 1, 0)]
    starts_B = (d_B > sol_B) & ((before_B == dot) | (before_B == v.sol_id))
    one_sentence_B = ~jnp.any(after_BxL & (tokens_BxL == dot), axis=1)
    back_B = tokens_BxL[rows, jnp.minimum(a_B + 1, L - 1)] == v.back_id
    ask_B = (ends_B & starts_B & one_sentence_B & (n_B >= 1) & (n_B <= name_len())
             & (a_B < last_B) & ~back_B)
    return Sentence(ends_B, ask_B, d_B, n_B)


def query(tokens_BxL: jax.Array, s: Sentence) -> tuple[jax.Array, jax.Array]:
    """(``<start> X <end>`` pad… int32[B, Q], positions int32[B, Q]; -1 where not asked)."""
    v = get_vocab()
    B, L = tokens_BxL.shape
    Q = name_len() + 2
    t_Q = jnp.arange(Q)
    name_BxQ = tokens_BxL[jnp.arange(B)[:, None], jnp.clip(s.define[:, None] + t_Q, 0, L - 1)]
    n = s.name_len[:, None]
    q_BxQ = jnp.where(t_Q == 0, v.start_id, jnp.where(
        t_Q <= n, name_BxQ, jnp.where(t_Q == n + 1, v.end_id, v.pad_id)))
    pos_BxQ = jnp.where(s.ask[:, None], s.define[:, None] + t_Q, -1)  # p + 1 = define
    return q_BxQ.astype(jnp.int32), pos_BxQ.astype(jnp.int32)


def query_hidden(cfg: ModelConfig, layer: str, params: Any, cache: Any, tokens_BxL: jax.Array,
                 s: Sentence) -> jax.Array:
    """float32[B, D]: the detector model's `layer` at the query's ``<end>``, the row seen up to
    p only (a discarded copy of the cache with the later slots emptied)."""
    q_BxQ, pos_BxQ = query(tokens_BxL, s)
    view = invalidate_from(cache, jnp.where(s.ask, s.define, _NEVER))  # keep positions <= p
    (_, acts), _ = GPT2(cfg, decode=True).apply(
        {"params": params, "cache": view}, q_BxQ, positions_BxT=pos_BxQ, capture=(layer,),
        mutable=["cache"])
    return acts[layer][jnp.arange(q_BxQ.shape[0]), s.name_len + 1].astype(jnp.float32)


def probe_ready(cfg: ModelConfig, layer: str, args: dict[str, Any], cache: Any,
                tokens_BxL: jax.Array, s: Sentence) -> jax.Array:
    """bool[B]: the can_next probe says X is ready (rows not asked: True)."""
    h_BxD = query_hidden(cfg, layer, args["params"], cache, tokens_BxL, s)
    feats = tp.normalise(h_BxD[None, :, None, :], args["norm"])
    logits = heads.apply_heads(args["heads"], feats, heads.class_mask((2,)), remat=False)
    ready_B = jnp.argmax(logits["linear"][0, :, 0, 0], axis=-1) == 1
    return ready_B | ~s.ask


@functools.lru_cache(maxsize=4096)
def _parsed(problem_text: str):
    return parse_problem(problem_text)


def judge_last_sentence(tokens_BxL: np.ndarray, length_B: np.ndarray,
                        ask_B: np.ndarray) -> np.ndarray:
    """Host: bool[B], row b's last sentence is its solution's first wrong one (the judge)."""
    v = get_vocab()
    out = np.zeros(ask_B.shape, bool)
    for b in np.flatnonzero(ask_B):
        problem_text, solution, _ = v.split_example(tokens_BxL[b, : length_B[b]].tolist())
        if solution is None:
            continue
        steps, _ = split_steps(solution)
        verdict = judge_problem(_parsed(problem_text), solution)
        out[b] = bool(steps) and verdict.first_error == steps[-1][0]
    return out


def perfect_ready(tokens_BxL: jax.Array, length_B: jax.Array, s: Sentence) -> jax.Array:
    wrong = jax.pure_callback(judge_last_sentence, jax.ShapeDtypeStruct(s.ask.shape, jnp.bool_),
                              tokens_BxL, length_B, s.ask)
    return ~(wrong & s.ask)


def record_verdicts(flags_BxM: jax.Array, n_sent_B: jax.Array, ask_B: jax.Array,
                    regret_B: jax.Array) -> jax.Array:
    """flags with each asked row's verdict (1 regret, 0 kept) at its sentence index n_sent."""
    rows = jnp.arange(flags_BxM.shape[0])
    slot_B = jnp.minimum(n_sent_B, flags_BxM.shape[1] - 1)
    return flags_BxM.at[rows, slot_B].set(
        jnp.where(ask_B, regret_B.astype(jnp.int8), flags_BxM[rows, slot_B]))


@dataclasses.dataclass(frozen=True)
class RegretHook:
    """The hook (module docstring). `args`: {"temperature": base, and for kind="probe" the
    detector's "params" (merged), "heads" and "norm" (`regret_detector.Detector.args`)}."""

    cfg: ModelConfig
    kind: str
    max_retries: int = 10
    act: bool = True
    resample_temperature: float = 1.0
    layer: str = "final"
    max_sentences: int = 96

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"regret kind={self.kind!r}: one of {KINDS}")

    def init(self, args: Any, prompt_BxP: jax.Array, prompt_len_B: jax.Array,
             slots: int) -> dict[str, Any]:
        B, P = prompt_BxP.shape
        aux = {"retries": jnp.zeros((B,), jnp.int32), "n_sent": jnp.zeros((B,), jnp.int32),
               "flags": jnp.full((B, self.max_sentences), -1, jnp.int8),
               "prev_len": prompt_len_B, "sol": prompt_len_B - 1,
               "base_temp": jnp.broadcast_to(jnp.asarray(args["temperature"], jnp.float32), (B,))}
        if self.kind == "probe":
            model = GPT2(self.cfg, decode=True)
            pos_BxP = jnp.where(jnp.arange(P)[None] < prompt_len_B[:, None], jnp.arange(P), -1)
            cache = init_cache(model, B, slots + name_len() + 2)
            _, mut = model.apply({"params": args["params"], "cache": cache}, prompt_BxP,
                                 positions_BxT=pos_BxP, mutable=["cache"])
            aux["cache"] = mut["cache"]
        return aux

    def step(self, state: DecodeState, args: Any) -> DecodeState:
        aux = dict(state.aux)
        B = state.tokens.shape[0]
        rows = jnp.arange(B)
        appended_B = state.length > aux["prev_len"]
        last_B = state.length - 1
        if self.kind == "probe":  # feed the new token to the detector's cache
            pos_Bx1 = jnp.where(appended_B, last_B, -1)[:, None]
            _, mut = GPT2(self.cfg, decode=True).apply(
                {"params": args["params"], "cache": aux["cache"]},
                state.tokens[rows, last_B][:, None], positions_BxT=pos_Bx1, mutable=["cache"])
            aux["cache"] = mut["cache"]
        s = find_sentence(state.tokens, state.length, appended_B, aux["sol"])
        if self.act:
            s = dataclasses.replace(s, ask=s.ask & (aux["retries"] < self.max_retries))
        if self.kind == "probe":
            ready = lambda: probe_ready(self.cfg, self.layer, args, aux["cache"], state.tokens, s)
        else:
            ready = lambda: perfect_ready(state.tokens, state.length, s)
        ready_B = jax.lax.cond(jnp.any(s.ask), ready, lambda: jnp.ones((B,), bool))
        regret_B = s.ask & ~ready_B
        aux["flags"] = record_verdicts(aux["flags"], aux["n_sent"], s.ask, regret_B)
        aux["n_sent"] = aux["n_sent"] + s.ends
        temperature = jnp.where(s.ends, aux["base_temp"], state.temperature)
        if self.act:
            state = rewind(state, jnp.where(regret_B, s.define, state.length),
                           get_vocab().pad_id)
            aux["retries"] = aux["retries"] + regret_B
            aux["n_sent"] = aux["n_sent"] - regret_B
            temperature = jnp.where(regret_B, self.resample_temperature, temperature)
            if self.kind == "probe":
                aux["cache"] = invalidate_from(aux["cache"],
                                               jnp.where(regret_B, s.define, _NEVER))
        aux["prev_len"] = state.length
        return state._replace(temperature=temperature, aux=aux)
