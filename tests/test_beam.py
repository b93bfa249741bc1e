"""Beam search: width 1 is greedy; a width that covers every candidate finds the brute-force
best sequence, by log-probability and by length-normalised score."""

import itertools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from physics_lm.config import ModelConfig
from physics_lm.eval.beam import beam_search
from physics_lm.eval.decode import completions, generate
from physics_lm.models.gpt2 import GPT2

V, BOS, EOS = 5, 4, 3
PROMPT = jnp.array([[BOS, 0, 0], [BOS, 1, 2], [BOS, 2, 0]], jnp.int32)
PROMPT_LEN = jnp.array([1, 3, 2], jnp.int32)


def _model(seed: int = 0):
    cfg = ModelConfig(num_layers=2, num_heads=2, d_model=16, vocab_size=V, max_len=16,
                      pos="rotary", tie_embeddings=False)
    params = nn.unbox(GPT2(cfg).init(jax.random.key(seed), jnp.zeros((1, 4), jnp.int32))["params"])
    # Sharpen the random model so sequences differ clearly in probability.
    params = jax.tree.map(lambda x: x * 3.0 if x.ndim >= 2 else x, params)
    return cfg, params


def _logprob(cfg, params, prompt: list[int], gen: list[int]) -> float:
    tokens = jnp.array([prompt + gen], jnp.int32)
    logits, _ = GPT2(cfg).apply({"params": params}, tokens)
    logp = jax.nn.log_softmax(logits[0].astype(jnp.float32))
    return float(sum(logp[len(prompt) - 1 + i, t] for i, t in enumerate(gen)))


def test_width_one_is_greedy():
    cfg, params = _model()
    got = beam_search(cfg, params, PROMPT, PROMPT_LEN, beam=1, max_new=6, eos_id=EOS)
    ref = generate(cfg, params, jax.random.key(0), PROMPT, PROMPT_LEN, max_new=6,
                   temperature=0.0, eos_id=EOS)
    assert completions(got) == completions(ref)


def test_beams_reordered_across_cache_growth_score_like_a_full_forward():
    cfg, params = _model()  # 100 steps: the cache grows at 64 (decode.segment_ends)
    got = beam_search(cfg, params, PROMPT, PROMPT_LEN, beam=3, max_new=100, eos_id=-1)
    greedy = generate(cfg, params, jax.random.key(0), PROMPT, PROMPT_LEN, max_new=100,
                      temperature=0.0, eos_id=-1)
    assert completions(beam_search(cfg, params, PROMPT, PROMPT_LEN, beam=1, max_new=100,
                                   eos_id=-1)) == completions(greedy)
    for b, (gen, _) in enumerate(completions(got)):
        prompt = PROMPT[b, : PROMPT_LEN[b]].tolist()
        assert len(gen) == 100
        np.testing.assert_allclose(float(got.logprob[b]), _logprob(cfg, params, prompt, gen),
                                   rtol=1e-3)


@pytest.mark.parametrize("length_penalty", [0.0, 1.0])
def test_exhaustive_width_finds_the_brute_force_best(length_penalty):
    cfg, params = _model(seed=1)
    max_new = 3
    got = beam_search(cfg, params, PROMPT, PROMPT_LEN, beam=64, max_new=max_new, eos_id=EOS,
                      length_penalty=length_penalty)
    rows = completions(got)
    for b in range(PROMPT.shape[0]):
        prompt = PROMPT[b, : PROMPT_LEN[b]].tolist()
        finished = [[*body, EOS] for n in range(max_new)
                    for body in itertools.product([t for t in range(V) if t != EOS], repeat=n)]
        scored = {tuple(g): _logprob(cfg, params, prompt, g) / len(g) ** length_penalty
                  for g in finished}
        best = max(scored, key=scored.get)
        tokens, done = rows[b]
        assert done and (*tokens, EOS) == best, (b, tokens, best)
        want_logp = scored[best] * len(best) ** length_penalty
        np.testing.assert_allclose(float(got.logprob[b]), want_logp, rtol=1e-4, atol=1e-4)
        # ...and strictly better than the runner-up, so the check is not a tie
        assert sorted(scored.values())[-2] < scored[best]
