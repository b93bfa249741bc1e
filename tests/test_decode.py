"""Sampling: KV-cached == full recompute, greedy/top-k, EOS stops rows, prompts kept, rewind."""

import itertools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from physics_lm.config import POSITION_SCHEMES, ModelConfig
from physics_lm.eval.decode import FnHook, completions, generate, rewind, segment_ends
from physics_lm.models.gpt2 import GPT2

V, BOS, EOS = 8, 7, 5


def _model(pos: str) -> tuple[ModelConfig, dict]:
    cfg = ModelConfig(num_layers=2, num_heads=4, d_model=32, vocab_size=V, max_len=32, pos=pos,
                      rel_max_distance=8, tie_embeddings=False)
    params = nn.unbox(GPT2(cfg).init(jax.random.key(0), jnp.zeros((1, 8), jnp.int32))["params"])
    # Sharpen the random model (logits of order 1, not ~0.01) so tokens depend on the context
    # rather than on the sampling noise alone; untied, so it does not just copy its input.
    params = jax.tree.map(lambda x: x * 4.0 if x.ndim >= 2 else x, params)
    params["lm_head"]["kernel"] = params["lm_head"]["kernel"] * 5.0
    return cfg, params


# Ragged prompts: row 0 is BOS only, the others carry a few tokens (left-aligned, pad after).
PROMPT = jnp.array([[BOS, 0, 0, 0], [BOS, 1, 2, 0], [BOS, 3, 1, 2]], jnp.int32)
PROMPT_LEN = jnp.array([1, 3, 4], jnp.int32)


@pytest.mark.parametrize("pos", POSITION_SCHEMES)
def test_cached_equals_full_recompute(pos):
    cfg, params = _model(pos)
    kw = dict(max_new=12, eos_id=EOS)
    for temperature in (0.0, 1.0):
        got = generate(cfg, params, jax.random.key(3), PROMPT, PROMPT_LEN,
                       temperature=temperature, **kw)
        ref = generate(cfg, params, jax.random.key(3), PROMPT, PROMPT_LEN,
                       temperature=temperature, use_cache=False, **kw)
        np.testing.assert_array_equal(got.tokens, ref.tokens, err_msg=f"T={temperature}")
        np.testing.assert_array_equal(got.length, ref.length)
        np.testing.assert_allclose(got.logprob, ref.logprob, atol=1e-4)
        assert int(jnp.max(got.length - PROMPT_LEN)) >= 2  # it really generated something


@pytest.mark.parametrize("pos", ["rotary", "position_only"])
def test_cache_grown_across_segments_equals_full_recompute(pos):
    cfg, params = _model(pos)
    assert len(segment_ends(150)) == 3  # 64, 128, 150: the cache grows twice
    kw = dict(max_new=150, eos_id=-1, temperature=1.0)
    got = generate(cfg, params, jax.random.key(4), PROMPT, PROMPT_LEN, **kw)
    ref = generate(cfg, params, jax.random.key(4), PROMPT, PROMPT_LEN, use_cache=False, **kw)
    np.testing.assert_array_equal(got.tokens, ref.tokens)
    np.testing.assert_allclose(got.logprob, ref.logprob, rtol=1e-4)


@pytest.mark.parametrize("steps", [1, 63, 64, 65, 512, 2048, 4099])
def test_segment_ends_cover_the_steps_with_few_bodies(steps):
    ends = segment_ends(steps)
    assert ends[-1] == steps and all(a < b for a, b in itertools.pairwise(ends))
    assert len(ends) <= 2 + max(steps // 64, 1).bit_length()
    # a segment's cache is at most twice the slots filled when it starts (64 at the first)
    for lo, hi in itertools.pairwise((0, *ends)):
        assert hi <= max(64, 2 * lo)


def test_greedy_deterministic_topk1_and_prompt_respected():
    cfg, params = _model("rotary")
    run = lambda key, **kw: generate(cfg, params, key, PROMPT, PROMPT_LEN, max_new=12,
                                     eos_id=-1, **kw)
    greedy = run(jax.random.key(0), temperature=0.0)
    np.testing.assert_array_equal(greedy.tokens,
                                  run(jax.random.key(9), temperature=0.0).tokens)
    np.testing.assert_array_equal(greedy.tokens,
                                  run(jax.random.key(5), temperature=1.0, top_k=1).tokens)
    assert np.all(np.asarray(greedy.logprob) == 0.0)
    hot = run(jax.random.key(5), temperature=1.0)
    assert not np.array_equal(hot.tokens, greedy.tokens)  # sampling is not argmax
    for tokens in (greedy.tokens, hot.tokens):
        for b, n in enumerate(np.asarray(PROMPT_LEN)):
            np.testing.assert_array_equal(tokens[b, :n], PROMPT[b, :n])
        np.testing.assert_array_equal(np.asarray(greedy.length), np.asarray(PROMPT_LEN) + 12)
    # The prompt conditions the continuation: a different prompt body changes what follows.
    other = generate(
        cfg, params, jax.random.key(5), PROMPT.at[2, 1:4].set(jnp.array([1, 3, 3])), PROMPT_LEN,
        max_new=12, eos_id=-1, temperature=1.0)
    assert not np.array_equal(other.tokens[2, 4:], hot.tokens[2, 4:])
    np.testing.assert_array_equal(other.tokens[:2], hot.tokens[:2])  # rows independent


def test_eos_stops_each_row_and_pads_after():
    cfg, params = _model("absolute")
    # The token this random model emits most plays EOS, so rows stop at different steps.
    free = generate(cfg, params, jax.random.key(1), PROMPT, PROMPT_LEN, max_new=20,
                    temperature=1.0, eos_id=-1)
    emitted = np.concatenate([np.asarray(free.tokens)[b, PROMPT_LEN[b]:] for b in range(3)])
    counts = np.bincount(emitted, minlength=V)
    counts[0] = 0  # 0 is pad: EOS must differ from it for the padding check to mean anything
    eos = int(counts.argmax())
    res = generate(cfg, params, jax.random.key(1), PROMPT, PROMPT_LEN, max_new=20,
                   temperature=1.0, eos_id=eos)
    tokens, length, done = map(np.asarray, (res.tokens, res.length, res.done))
    assert done.any()
    for b in range(3):
        if done[b]:
            assert tokens[b, length[b] - 1] == eos
            assert eos not in tokens[b, PROMPT_LEN[b]:length[b] - 1]
        assert np.all(tokens[b, length[b]:] == 0)
    rows = completions(res)
    assert [len(c) + PROMPT_LEN[b] + d for b, (c, d) in enumerate(rows)] == length.tolist()


@pytest.mark.parametrize("use_cache", [True, False])
def test_rewind_hook_resumes_from_kept_prefix(use_cache):
    """A hook that erases the last 3 tokens at step 5 must, under greedy decoding, land on the
    same continuation as no hook (the regret/retry plumbing of Part 2.2)."""
    cfg, params = _model("relative")

    def hook(state):
        back = jnp.where(state.step == 5, state.length - 3, state.length)
        return rewind(state, back)

    kw = dict(temperature=0.0, eos_id=-1, use_cache=use_cache)
    plain = generate(cfg, params, jax.random.key(0), PROMPT, PROMPT_LEN, max_new=10, **kw)
    retried = generate(cfg, params, jax.random.key(0), PROMPT, PROMPT_LEN, max_new=13,
                       hook=FnHook(hook), **kw)
    np.testing.assert_array_equal(retried.length, plain.length)
    np.testing.assert_array_equal(retried.tokens[:, :14], plain.tokens)
