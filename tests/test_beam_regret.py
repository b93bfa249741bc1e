"""Retry upon regret over beam search, one sentence per round: with nothing to regret, width 1
is greedy decoding and width K commits the most probable sentence of a K-beam search; a vP
decode never keeps a wrong step while retries last (`test_regret.py`, the mode's table)."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import sample_igsm

from physics_lm.config import ModelConfig
from physics_lm.data.igsm.task import IGSMTask
from physics_lm.data.igsm.text.vocab import get_vocab
from physics_lm.eval import beam_regret as br
from physics_lm.eval.beam import beam_search
from physics_lm.eval.beam_regret import beam_regret
from physics_lm.eval.decode import DecodeResult, completions, generate
from physics_lm.eval.regret import RegretHook
from physics_lm.models.gpt2 import GPT2

TASK = IGSMTask("custom", max_op=3, max_edge=6, seq_len=320, split="all")


def _setup(dot_bias: float):
    """A random rotary model over the iGSM vocabulary whose output favours ``.`` by `dot_bias`
    (so sentences end within a few tokens), and 3 sampled prompts."""
    v = get_vocab()
    cfg = ModelConfig(num_layers=2, num_heads=2, d_model=32, vocab_size=TASK.vocab_size,
                      max_len=512, pos="rotary", tie_embeddings=False)
    params = nn.unbox(GPT2(cfg).init(jax.random.key(3), jnp.zeros((1, 4), jnp.int32))["params"])
    params = jax.tree.map(lambda x: x * 3.0 if x.ndim >= 2 else x, params)
    D = cfg.d_model  # a constant feature after the final norm, read by the "." column only
    params["ln_f"] = {**params["ln_f"], "bias": params["ln_f"]["bias"] + 1.0}
    kernel = params["lm_head"]["kernel"]
    params["lm_head"] = {"kernel": kernel.at[:, v.word_to_id(".")].add(dot_bias / D)}
    batch = sample_igsm(TASK, 3, seed=2)
    lens = batch.labels["sol_pos"] + 1
    P = int(lens.max())
    return cfg, params, jnp.asarray(batch.tokens[:, :P]), jnp.asarray(lens)


def test_width_one_without_regret_is_greedy_sentence_by_sentence():
    v = get_vocab()
    cfg, params, prompt, lens = _setup(dot_bias=2.0)
    hook = RegretHook(cfg, "perfect", max_retries=0)  # never asks: only the rounds remain
    got = beam_regret(cfg, params, jax.random.key(0), prompt, lens, hook=hook,
                      hook_args={"temperature": np.float32(0.0)}, beam=1, max_new=40,
                      eos_id=v.eos_id, pad_id=v.pad_id, sentence_len=8)
    ref = generate(cfg, params, jax.random.key(0), prompt, lens, max_new=40, temperature=0.0,
                   eos_id=v.eos_id, pad_id=v.pad_id)
    dots = sum(g.count(v.word_to_id(".")) for g, _ in completions(ref))
    assert dots >= 3, "the biased model should end several sentences"
    assert completions(got) == completions(ref)
    assert (np.asarray(got.aux["retries"]) == 0).all()


def test_width_k_commits_the_best_sentence_of_a_k_beam_search():
    v = get_vocab()
    cfg, params, prompt, lens = _setup(dot_bias=4.0)
    hook = RegretHook(cfg, "perfect", max_retries=0)
    got = beam_regret(cfg, params, jax.random.key(0), prompt, lens, hook=hook,
                      hook_args={"temperature": np.float32(0.0)}, beam=3, max_new=12,
                      eos_id=v.eos_id, pad_id=v.pad_id, sentence_len=12)
    first = beam_search(cfg, params, prompt, lens, beam=3, max_new=12,
                        eos_id=(v.eos_id, v.word_to_id(".")), pad_id=v.pad_id)
    n = np.asarray(first.length)
    assert (n < np.asarray(got.length)).any(), "later rounds should extend some rows"
    for b in range(prompt.shape[0]):  # the first round commits the beam search's best sentence
        np.testing.assert_array_equal(np.asarray(got.tokens[b, : n[b]]),
                                      np.asarray(first.tokens[b, : n[b]]))


def _scripted(script_BxL: jax.Array, tokens: jax.Array, length: jax.Array, stops: tuple,
              width: int, pad: int) -> DecodeResult:
    """A fake sentence decoder: each row continues with `script` from its length through the
    script's next stop token."""
    idx = jnp.arange(width)
    at_S = jnp.arange(script_BxL.shape[1])[None]
    is_stop = functools.reduce(jnp.logical_or, [script_BxL == s for s in stops])
    stop_at = jnp.min(jnp.where(is_stop & (at_S >= length[:, None]), at_S, width), axis=1)
    script = jnp.pad(script_BxL, ((0, 0), (0, width - script_BxL.shape[1])), constant_values=pad)
    wide = jnp.pad(tokens, ((0, 0), (0, width - tokens.shape[1])), constant_values=pad)
    out = jnp.where(idx[None] < length[:, None], wide,
                    jnp.where(idx[None] <= stop_at[:, None], script, pad))
    return DecodeResult(out, stop_at + 1, length, jnp.ones_like(length, bool),
                        jnp.zeros(length.shape))


@pytest.mark.parametrize("retries", [0, 3])
def test_vp_rewinds_a_wrong_beam_sentence_and_keeps_the_resampled_right_one(monkeypatch, retries):
    """Scripted decoders: the beam writes sentence k of row 0 wrong (another parameter, judged
    wrong there), resampling writes it right; row 1 is always right."""
    from test_regret import _wrong_case, sampled_rows

    v = get_vocab()
    rows = sampled_rows()
    wrong, define, k = _wrong_case([r[:3] for r in rows])
    right0 = next(full for ids, _, _, full in rows if ids[:define] == wrong[:define])
    right1 = rows[-1][3]
    L = max(len(right0), len(right1), len(wrong)) + 8
    pad = lambda x: np.pad(np.asarray(x, np.int32), (0, L - len(x)), constant_values=v.pad_id)
    right_BxL = jnp.asarray(np.stack([pad(right0), pad(right1)]))
    wrong_BxL = jnp.asarray(np.stack([pad(wrong), pad(right1)]))
    stops = (v.eos_id, v.word_to_id("."))

    def fake_beam(cfg, params, tokens, length, *, beam, max_new, eos_id, pad_id):
        at_k = (length == define) & (jnp.arange(2) == 0)
        script = jnp.where(at_k[:, None], wrong_BxL, right_BxL)
        return _scripted(script, tokens, length, stops, tokens.shape[1] + max_new, pad_id)

    def fake_generate(cfg, params, key, tokens, length, *, max_new, temperature, eos_id,
                      pad_id):
        return _scripted(right_BxL, tokens, length, stops, tokens.shape[1] + max_new, pad_id)

    monkeypatch.setattr(br, "beam_search", fake_beam)
    monkeypatch.setattr(br, "generate", fake_generate)
    decode = jax.jit(br.beam_regret.__wrapped__, static_argnames=(
        "cfg", "hook", "beam", "max_new", "eos_id", "pad_id", "sentence_len"))
    sol = [int(np.flatnonzero(np.asarray(r) == v.sol_id)[0]) for r in (right0, right1)]
    P = max(sol) + 1
    prompt = jnp.asarray(np.stack([pad(r)[:P] for r in (right0, right1)]))
    cfg = ModelConfig(vocab_size=TASK.vocab_size)
    hook = RegretHook(cfg, "perfect", max_retries=retries)
    out = jax.device_get(decode(cfg, None, jax.random.key(0), prompt, jnp.asarray(sol) + 1,
                                hook=hook, hook_args={"temperature": np.float32(0.0)}, beam=4,
                                max_new=L - P, eos_id=v.eos_id, pad_id=v.pad_id,
                                sentence_len=40))
    assert out.done.all()
    row1 = out.tokens[1, : out.length[1]]
    np.testing.assert_array_equal(row1, right1)  # nothing to regret
    asked = 0 if retries else -1  # with no retries left a sentence is never asked
    assert out.aux["retries"][1] == 0
    assert (out.aux["flags"][1][: len(rows[-1][2])] == asked).all()
    row0 = out.tokens[0, : out.length[0]].tolist()
    if retries:  # rewound once, the resampled (right) sentence kept: the right solution
        assert row0 == list(right0) and out.aux["retries"][0] == 1
        assert out.aux["flags"][0, k] == 0 and (out.aux["flags"][0, :k] == 0).all()
    else:  # no retries: the wrong sentence stays, never asked
        assert row0[: len(wrong)] == wrong and out.aux["retries"][0] == 0
        assert out.aux["flags"][0, k] == -1
