"""`cfg_eval_sets`: fixed true strings of each shipped grammar, with NT labels and verdicts.

One config per grammar (`cfg3b`, `cfg3f`, ..., `grammar_names()`), two splits, each n strings
drawn by the jitted sampler `sample_strings(key, grammar, n)` with the keys of the Part 1
evaluator (`eval/cfg_eval.py`) under eval seed s, root = `jax.random.key(s)`:

  generation    key fold_in(root, 0): the strings whose prefixes prompt generation (cut0 / cut50,
                corrupted prefixes) and the reference of the subtree diversity
  distribution  key fold_in(root, 1): the strings scored for KL, entropy and loss

so `eval.dataset=tfds:cfg_eval_sets/<grammar>[_n<N>_s<SEED>]` with eval.n_generate = eval.n_dp
= N and eval.seed = SEED gives exactly the numbers of sampling. Default n = 4,096, seed 0.

Per example: tokens (terminal ids 1..num_sym, int32[length]), length, nt_ancestor and
nt_boundary (int32[length, D], the sampler's labels: local NT class of each token's level-l
ancestor, 1 where the token ends that ancestor's span), member (the batched CYK verdict on the
string: 1 for every true string, a check of the checker) and a perturbed copy for membership
benchmarks: corrupted (each token replaced with probability CORRUPT_RATE by another terminal,
the training recipe's `corrupt_tokens`, key fold_in(root, 100 + split index)), n_flipped and
corrupted_member (its CYK verdict: a flip may keep the string in the language).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, ClassVar

import numpy as np
import tensorflow_datasets as tfds

from physics_lm.data.cfg.grammar import grammar_names, load_grammar
from physics_lm.data.tfds.base import SizedConfigs

SPLITS = ("generation", "distribution")  # split i is drawn with key fold_in(root, i)
CORRUPT_RATE = 0.15  # CFGTask's default per-token flip rate (the paper's robustness setting)


def split_keys(seed: int, split: str) -> tuple[Any, Any]:
    """(string key, corruption key) of a split under eval seed `seed`."""
    import jax

    root, i = jax.random.key(seed), SPLITS.index(split)
    return jax.random.fold_in(root, i), jax.random.fold_in(root, 100 + i)


class CfgEvalSets(SizedConfigs, tfds.core.GeneratorBasedBuilder):
    """True strings of a grammar for the Part 1 evaluation (module docstring)."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES: ClassVar[dict[str, str]] = {
        "1.0.0": "Strings of physics_lm.data.cfg.sampler.sample_strings."}
    DEFAULT_N = 4096
    BUILDER_CONFIGS: ClassVar[list] = []  # below: the class must exist to name its configs

    def _info(self) -> tfds.core.DatasetInfo:
        cfg = self.builder_config
        g = load_grammar(cfg.base)
        i32, D = np.int32, g.depth
        meta = {"grammar": cfg.base, "n": cfg.n, "seed": cfg.seed, "corrupt_rate": CORRUPT_RATE}
        return tfds.core.DatasetInfo(
            builder=self, description=__doc__, disable_shuffling=True,
            metadata=tfds.core.MetadataDict(meta),
            features=tfds.features.FeaturesDict({
                "tokens": tfds.features.Tensor(shape=(None,), dtype=i32),
                "length": tfds.features.Scalar(dtype=i32),
                "nt_ancestor": tfds.features.Tensor(shape=(None, D), dtype=i32),
                "nt_boundary": tfds.features.Tensor(shape=(None, D), dtype=i32),
                "member": tfds.features.Scalar(dtype=i32),
                "corrupted": tfds.features.Tensor(shape=(None,), dtype=i32),
                "n_flipped": tfds.features.Scalar(dtype=i32),
                "corrupted_member": tfds.features.Scalar(dtype=i32)}))

    def _split_generators(self, dl_manager: Any) -> dict[str, Iterator]:
        del dl_manager
        return {split: self._generate_examples(split) for split in SPLITS}

    def _generate_examples(self, split: str) -> Iterator[tuple[int, dict[str, Any]]]:
        import jax

        from physics_lm.data.cfg import membership
        from physics_lm.data.cfg.sampler import sample_strings
        from physics_lm.data.cfg.task import corrupt_tokens

        cfg = self.builder_config
        g = load_grammar(cfg.base)
        k_strings, k_corrupt = split_keys(cfg.seed, split)
        s = jax.device_get(sample_strings(k_strings, g, cfg.n))
        bad, flipped = map(np.asarray, jax.device_get(corrupt_tokens(
            k_corrupt, s.tokens, s.length, CORRUPT_RATE, g.num_sym)))
        n = [int(x) for x in s.length]
        strings = [s.tokens[r, : n[r]].tolist() for r in range(cfg.n)]
        corrupted = [bad[r, : n[r]].tolist() for r in range(cfg.n)]
        member = membership.check_strings(g, strings)
        corrupted_member = membership.check_strings(g, corrupted)
        for r in range(cfg.n):
            yield r, {"tokens": np.asarray(strings[r], np.int32), "length": n[r],
                      "nt_ancestor": np.asarray(s.nt_ancestor[r, : n[r]], np.int32),
                      "nt_boundary": np.asarray(s.nt_boundary[r, : n[r]], np.int32),
                      "member": int(member[r]),
                      "corrupted": np.asarray(corrupted[r], np.int32),
                      "n_flipped": int(flipped[r, : n[r]].sum()),
                      "corrupted_member": int(corrupted_member[r])}


CfgEvalSets.BUILDER_CONFIGS = [CfgEvalSets.make_config(b) for b in grammar_names()]
