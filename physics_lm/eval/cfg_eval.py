"""Part 1 evaluation of a trained model on its CFG: generation, diversity, KL, loss, robustness.

The `eval` config section of a CFG run (`EvalConfig`; all optional, validated at config load: an
unknown key or a bad value is a ConfigError naming it). `EVALUATOR` registers it for `mode=eval`
(physics_lm/modes.py), which writes workdir/eval/cfg.json and the plots:
  n_generate=256        generations per (setting, temperature)
  temperatures=[1.0]    temperatures of the cut0 / cut50 generation accuracy
  prefix_len=50         the cut of "cut50" and of the corrupted-prefix test
  top_k=0               top-k filter while sampling (0 = none, as in the paper)
  decode_batch=128      rows per decode / forward call (bounds the KV cache memory)
  max_total_len=0       BOS + string + EOS budget per generation; 0 = model.max_len
  n_dp=64               fresh true strings for KL, entropy and loss (exact DP on the host)
  n_entropy=64          valid generations per setting scored by -log P_true (host DP)
  robust=True           run the corrupted-prefix test (SPEC §7 protocol)
  robust_temperatures=[1.0, 0.1]
  corrupt_rate=-1.0     per-token flip rate of the test prefixes; < 0 = the task's corrupt_rate
  seed=0                eval randomness (fresh strings, corruption, sampling)
  control=False         also evaluate the random-init model (the "memorised nothing" row)
  subtrees=True         subtree diversity of the cut0 generations (parses every valid one)
  step=-1               checkpoint step; -1 = latest
  plots=True            write eval/*.png when matplotlib is importable
  dataset=""            or "tfds:cfg_eval_sets/<config>": read the true strings (prefixes and
                        KL strings) from that frozen set (physics_lm/data/tfds) instead of sampling
  data_dir=""           where the set was built ("" = TFDS's default)

Metrics (`evaluate_cfg`'s dict; "T1" is temperature 1, "T0.1" 0.1):
  generation.cut{0,k}.T*: accuracy (EOS emitted and BOS-free string in the grammar, by the batched
    CYK), eos_frac, mean_len, distinct_frac (distinct strings / n), first_error_mean (mean position
    of the first token the grammar forbids, over the first n_dp rows; = length (+1 for EOS) when
    there is none: progress of a model whose accuracy is still 0), and, for the model's own
    sampling distribution q, nll_model = mean -log q(string incl. EOS) over finished rows: an
    unbiased estimate of H(q) (nats per string; for cut k, of the completion given the prefix)
    when T=1 and top_k=0. For cut0 also nll_true = mean -log P_true(s) over up to n_entropy
    *valid* generations (exact DP), i.e. the cross entropy H(q|valid, p). Compare both with
    truth.nll_true = mean -log P_true(s) of true strings, the Monte-Carlo estimate of the
    grammar's string entropy H(p): a model that collapses onto frequent strings has
    nll_model < H(p); one that spreads its mass badly has nll_true > H(p).
  diversity.subtrees.T*: the paper's diversity measure on the valid cut0 generations at each
    temperature versus as many of the true strings behind the cut prefixes: per NT of every
    level, distinct subtrees (substrings it derives in one parse) and the birthday-paradox
    support estimate from collisions (eval/cfg_diversity.py); distinct_ratio = distinct
    generated subtrees / distinct true ones over levels >= 1.
  truth: accuracy of the true sampler's strings (must be 1: a check of the checker), nll_true,
    nll_true_per_token, mean_len, distinct_frac.
  distribution: kl = demo2's KL(true || model) per row (eps=1e-5), averaged over the rows of a
    string then over n_dp fresh strings (SPEC §4.3); entropy_true / entropy_model = mean per-row
    entropy of the true rows and of the model's softmax restricted to {EOS, terminals};
    kl_by_position[r] = mean KL of row r. Strings longer than the context are cut (rows depend
    on the prefix only, so the cut rows are exact).
    Where the model errs (why accuracy can stay low at a small KL): forbidden mass = the model's
    full-vocabulary probability of a token the grammar forbids there (BOS/PAD included), the
    per-token risk of breaking the string. forbidden_mass_per_string = its sum over a string's
    rows; valid_prob_teacher_forced = mean over strings of prod_r (1 - forbidden mass): the
    chance a T = 1 sample never steps outside the grammar *if it stayed on a true prefix*, to
    set beside the measured cut0 accuracy (a sample's own prefixes drift, so this is an
    estimate, not the metric). by_boundary: the rows grouped by the parse of the true string
    (data/cfg/parse.py): "start" (row 0), "level<l>" (the row's token opens a new level-l NT and
    no shallower one: the choice is made by a level l-1 rule, the long-range structure for
    small l), "terminal" (inside a leaf NT's rule), "end" (the EOS row); per group rows, mean
    kl, mean forbidden_mass and its share of all forbidden mass.
  loss: model_nll_per_token = full-vocab cross entropy of the next token (terminals, then EOS)
    on the same strings as fed with BOS; true_nll_per_token = the Bayes-optimal loss there.
  robustness.T*: corrupted_acc = completions of a corrupted k-token prefix (each token flipped with
    corrupt_rate to another terminal) such that prefix + completion becomes valid by changing
    prefix tokens only (CYK with a wildcard prefix); repaired_acc = the stricter official score:
    valid after at most as many prefix repairs as tokens were flipped (the min-plus "fewest
    prefix repairs" DP, data/cfg/repair.py); repairs_hist[k] = how many completions need exactly
    k repairs (among the wildcard-valid ones), repairs_mean their mean; clean_acc = exact
    accuracy from the clean prefix of the same strings with the same sampling key;
    flipped_mean = flips per prefix.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from physics_lm.config import ConfigError, ModelConfig, check_dataset
from physics_lm.data.cfg import membership, nexttoken
from physics_lm.data.cfg.grammar import Grammar
from physics_lm.data.cfg.parse import parse_spans
from physics_lm.data.cfg.repair import min_prefix_repairs
from physics_lm.data.cfg.sampler import sample_strings
from physics_lm.data.cfg.task import CFGTask, corrupt_tokens
from physics_lm.eval.cfg_diversity import subtree_diversity
from physics_lm.eval.decode import completions, generate
from physics_lm.eval.plots import write_plots
from physics_lm.models.gpt2 import GPT2
from physics_lm.modes import Handler


@dataclasses.dataclass(frozen=True)
class EvalConfig:
    """The `eval` section (defaults and meanings: module docstring)."""

    n_generate: int = 256
    temperatures: tuple[float, ...] = (1.0,)
    prefix_len: int = 50
    top_k: int = 0
    decode_batch: int = 128
    max_total_len: int = 0
    n_dp: int = 64
    n_entropy: int = 64
    robust: bool = True
    robust_temperatures: tuple[float, ...] = (1.0, 0.1)
    corrupt_rate: float = -1.0
    seed: int = 0
    control: bool = False
    subtrees: bool = True
    step: int = -1
    plots: bool = True
    dataset: str = ""
    data_dir: str = ""

    def __post_init__(self) -> None:
        check_dataset("eval.dataset", self.dataset, "cfg")
        for key in ("n_generate", "decode_batch", "n_dp", "prefix_len"):
            if getattr(self, key) < 1:
                raise ConfigError(f"eval.{key}={getattr(self, key)!r}: must be >= 1")
        if self.n_entropy < 0 or self.top_k < 0 or self.max_total_len < 0:
            raise ConfigError(f"eval.n_entropy/top_k/max_total_len="
                              f"{(self.n_entropy, self.top_k, self.max_total_len)!r}: must be >= 0")
        if not self.temperatures or min(self.temperatures + self.robust_temperatures) < 0:
            raise ConfigError(f"eval.temperatures={self.temperatures!r}: need at least one, "
                              "all >= 0")


def tkey(t: float) -> str:
    return f"T{t:g}"


def true_strings(grammar: Grammar, key: jax.Array, n: int, ec: EvalConfig | None = None,
                 split: str = "") -> list[list[int]]:
    """n fresh strings of the grammar as token lists (host); with `ec.dataset`, the first n of
    that set's `split` (drawn there with this very key, physics_lm/data/tfds/cfg_sets.py)."""
    if ec is not None and ec.dataset:
        from physics_lm.data.tfds import read
        return read.cfg_strings(ec.dataset.removeprefix("tfds:"), ec.data_dir, grammar.name,
                                split, n)
    s = jax.device_get(sample_strings(key, grammar, n))
    return [s.tokens[i, : s.length[i]].tolist() for i in range(n)]


@functools.partial(jax.jit, static_argnames="cfg")
def _logits(cfg: ModelConfig, params: Any, tokens_BxT: jax.Array) -> jax.Array:
    return GPT2(cfg).apply({"params": params}, tokens_BxT)[0]


def _batched(rows: list, size: int):
    """Chunks of exactly `size` rows (the last padded by repeating row 0): one compile."""
    for i in range(0, len(rows), size):
        chunk = rows[i : i + size]
        yield i, chunk + [rows[0]] * (size - len(chunk)), len(chunk)


def sample_from_prefixes(model_cfg: ModelConfig, params: Any, grammar: Grammar,
                         prefixes: list[list[int]], key: jax.Array, temperature: float,
                         ec: EvalConfig, max_total: int) -> tuple[list[list[int]], np.ndarray,
                                                                  np.ndarray]:
    """Generates after BOS + prefix for each row; returns (strings, eos_N, logprob_N).

    strings[i] = prefix + completion without EOS (the string the grammar is asked about).
    """
    P = 1 + max(len(p) for p in prefixes)
    max_new = min(max_total - P, grammar.max_len + 1 - min(len(p) for p in prefixes))
    if max_new < 1:
        raise ConfigError(f"prefix of {P - 1} tokens leaves no room in max_total_len={max_total}")
    strings, eos, logp = [], [], []
    for i, chunk, n in _batched(prefixes, min(ec.decode_batch, len(prefixes))):
        prompt = np.zeros((len(chunk), P), np.int32)
        for r, p in enumerate(chunk):
            prompt[r, : 1 + len(p)] = [grammar.bos_id, *p]
        res = generate(model_cfg, params, jax.random.fold_in(key, i), jnp.asarray(prompt),
                       jnp.asarray([1 + len(p) for p in chunk], jnp.int32), max_new=max_new,
                       temperature=temperature, top_k=ec.top_k, eos_id=grammar.eos_id,
                       pad_id=grammar.pad_id)
        for p, (c, done) in zip(chunk[:n], completions(res)[:n], strict=True):
            strings.append(list(p) + c)
            eos.append(done)
        logp.extend(np.asarray(res.logprob)[:n].tolist())
    return strings, np.array(eos), np.array(logp)


def _string_nll(grammar: Grammar, strings: list[list[int]]) -> float:
    vals = [-nexttoken.log_prob_string(grammar, s) for s in strings]
    return float(np.mean(vals)) if vals else float("nan")


def first_error(grammar: Grammar, tokens: list[int], eos: bool) -> int:
    """Position of the first token the grammar forbids after the tokens before it (an emitted
    EOS counts as position len(tokens)); len(tokens) (+1 with EOS) when there is none.

    Why: for a model still learning, accuracy is 0 long before its generations stop being
    grammatical; how far it gets before its first mistake measures that progress."""
    foreign = [i for i, t in enumerate(tokens) if not 1 <= t <= grammar.num_sym]  # BOS, pad..
    if foreign:
        tokens, eos = tokens[: foreign[0]], False
    chosen = nexttoken.chosen_probs(nexttoken.next_token_probs(grammar, tokens), tokens)
    n = len(chosen) if eos else len(chosen) - 1
    bad = np.flatnonzero(~(chosen[:n] > 0))
    return int(bad[0]) if bad.size else n


def repair_scores(grammar: Grammar, strings: list[list[int]], prefix_lens: list[int],
                  flips: list[int], valid: np.ndarray) -> dict[str, Any]:
    """repaired_acc, repairs_hist, repairs_mean (module docstring) of completed strings.

    `valid[r]`: the string ended and passes membership with a wildcard prefix (else it needs
    infinitely many repairs and is not in the histogram).
    """
    repairs = [min_prefix_repairs(grammar, s, k) if v else np.inf
               for s, k, v in zip(strings, prefix_lens, valid, strict=True)]
    finite = [int(r) for r in repairs if np.isfinite(r)]
    return {"repaired_acc": float(np.mean([r <= f for r, f in zip(repairs, flips, strict=True)])),
            "repairs_hist": np.bincount(finite, minlength=1).tolist(),
            "repairs_mean": float(np.mean(finite)) if finite else float("nan")}


def generation_metrics(model_cfg: ModelConfig, params: Any, grammar: Grammar,
                       prefixes: list[list[int]], key: jax.Array, temperature: float,
                       ec: EvalConfig, max_total: int, *, wildcard: bool = False,
                       with_entropy: bool = False,
                       flips: list[int] | None = None) -> tuple[dict[str, Any], list]:
    """(metrics, valid strings): accuracy and diversity of generations after `prefixes`
    (module docstring); with `wildcard` and `flips` (tokens flipped per prefix) also the
    repair-based scores."""
    strings, eos, logp = sample_from_prefixes(model_cfg, params, grammar, prefixes, key,
                                              temperature, ec, max_total)
    wild = [len(p) for p in prefixes] if wildcard else None
    valid = membership.check_strings(grammar, strings, wildcard_prefix_lens=wild) & eos
    out = {"accuracy": float(valid.mean()), "eos_frac": float(eos.mean()),
           "mean_len": float(np.mean([len(s) for s in strings])),
           "distinct_frac": len({tuple(s) for s in strings}) / len(strings),
           "nll_model": float(-logp[eos].mean()) if eos.any() else float("nan"),
           "n": len(strings)}
    if wildcard and flips is not None:
        out.update(repair_scores(grammar, strings, [len(p) for p in prefixes], flips, valid))
    if not wildcard:  # a corrupted prefix has no grammatical continuation to judge
        first = [first_error(grammar, s, e) for s, e in zip(strings[: ec.n_dp], eos[: ec.n_dp],
                                                            strict=True)]
        out.update(first_error_mean=float(np.mean(first)), first_error_n=len(first))
    if with_entropy:
        good = [s for s, v in zip(strings, valid, strict=True) if v][: ec.n_entropy]
        out.update(nll_true=_string_nll(grammar, good), n_entropy=len(good))
    return out, [s for s, v in zip(strings, valid, strict=True) if v]


def boundary_groups(grammar: Grammar) -> list[str]:
    """Names of the row groups of `distribution.by_boundary`, by index (module docstring)."""
    return ["start", *(f"level{lv}" for lv in range(1, grammar.depth)), "terminal", "end"]


def row_boundaries(grammar: Grammar, tokens: list[int], k: int) -> np.ndarray | None:
    """Group index (`boundary_groups`) of rows 0..k of a true string; None if it does not parse.

    Row r predicts token r: it belongs to the shallowest level whose node starts at r.
    """
    spans = parse_spans(grammar, tokens)
    if spans is None:
        return None
    depth = grammar.depth
    group = np.full(k + 1, depth, np.int64)  # a token inside its leaf NT's rule
    for level in range(depth - 1, 0, -1):  # shallower levels overwrite deeper ones
        for _, start, _ in spans[level]:
            if start <= k:
                group[start] = level
    group[0] = 0
    if k == len(tokens):
        group[k] = depth + 1
    return group


def distribution_metrics(model_cfg: ModelConfig, params: Any, grammar: Grammar,
                         strings: list[list[int]], ec: EvalConfig, max_total: int
                         ) -> tuple[dict[str, Any], dict[str, Any]]:
    """(distribution, loss) metrics on fresh true strings (module docstring)."""
    n_max = max_total - 1  # BOS + n tokens of input
    kl_s, h_true, h_model, nll_m, nll_t = [], [], [], [], []
    kl_sum, kl_cnt = np.zeros(n_max + 1), np.zeros(n_max + 1)
    names = boundary_groups(grammar)
    g_rows, g_kl, g_forb = (np.zeros(len(names)) for _ in range(3))
    forb_per_string, valid_tf = [], []
    cols = np.array([grammar.eos_id, *range(1, grammar.num_sym + 1)])
    for _, chunk, n in _batched(strings, min(ec.decode_batch, len(strings))):
        x = np.full((len(chunk), max_total), grammar.pad_id, np.int32)
        x[:, 0] = grammar.bos_id
        for r, s in enumerate(chunk):
            x[r, 1 : 1 + min(len(s), n_max)] = s[:n_max]
        logits = np.asarray(_logits(model_cfg, params, jnp.asarray(x)), np.float64)
        for r, s in enumerate(chunk[:n]):
            k = min(len(s), n_max)
            p = nexttoken.next_token_probs(grammar, s[:k])  # rows 0..k
            q = nexttoken.model_rows_from_logits(grammar, logits[r, : k + 1])
            row_kl = np.array([nexttoken.kl_true_vs_model(p[i : i + 1], q[i : i + 1])
                               for i in range(k + 1)])
            kl_s.append(row_kl.mean())
            kl_sum[: k + 1] += row_kl
            kl_cnt[: k + 1] += 1
            h_true.append(nexttoken.true_entropy(p))
            h_model.append(float(-(q * np.log(np.maximum(q, 1e-300))).sum(-1).mean()))
            target = np.array([*s[:k], s[k] if k < len(s) else grammar.eos_id])
            z = logits[r, : k + 1]
            lse = np.log(np.exp(z - z.max(-1, keepdims=True)).sum(-1)) + z.max(-1)
            nll_m.extend(lse - z[np.arange(k + 1), target])
            col = np.where(target == grammar.eos_id, 0, target)
            nll_t.extend(-np.log(p[np.arange(k + 1), col]))
            forb = 1.0 - (np.exp(z[:, cols] - lse[:, None]) * (p > 0)).sum(-1)
            forb_per_string.append(float(forb.sum()))
            valid_tf.append(float(np.prod(1.0 - forb)))
            group = row_boundaries(grammar, s, k)
            if group is not None:
                np.add.at(g_rows, group, 1)
                np.add.at(g_kl, group, row_kl)
                np.add.at(g_forb, group, forb)
    seen = kl_cnt > 0
    dist = {"kl": float(np.mean(kl_s)), "entropy_true": float(np.mean(h_true)),
            "entropy_model": float(np.mean(h_model)), "n_strings": len(strings),
            "n_rows": int(kl_cnt.sum()),
            "kl_by_position": (kl_sum[seen] / kl_cnt[seen]).tolist(),
            "forbidden_mass_per_string": float(np.mean(forb_per_string)),
            "valid_prob_teacher_forced": float(np.mean(valid_tf)),
            "by_boundary": {
                name: {"rows": int(g_rows[i]),
                       "kl": float(g_kl[i] / g_rows[i]) if g_rows[i] else None,
                       "forbidden_mass": float(g_forb[i] / g_rows[i]) if g_rows[i] else None,
                       "forbidden_share": float(g_forb[i] / max(g_forb.sum(), 1e-300))}
                for i, name in enumerate(names)}}
    loss = {"model_nll_per_token": float(np.mean(nll_m)),
            "true_nll_per_token": float(np.mean(nll_t)), "n_tokens": len(nll_m)}
    return dist, loss


def evaluate_cfg(model_cfg: ModelConfig, params: Any, task: CFGTask, ec: EvalConfig
                 ) -> dict[str, Any]:
    """Every Part 1 metric of one model (params on host or device); see the module docstring."""
    g = task.spec
    max_total = ec.max_total_len or model_cfg.max_len
    root = jax.random.key(ec.seed)
    k_base, k_dp, k_gen, k_corrupt = (jax.random.fold_in(root, i) for i in range(4))
    # The sampling key depends on the temperature only, so the clean and the corrupted prefix
    # of a string are continued with the same randomness.
    gen_key = lambda t: jax.random.fold_in(k_gen, round(t * 1e4))
    base = true_strings(g, k_base, ec.n_generate, ec, "generation")
    cut = [s[: ec.prefix_len] for s in base]
    memo: dict[tuple, tuple[dict, list]] = {}

    def run(kind: int, prefixes, t: float, **kw) -> dict:
        if (kind, t) not in memo:
            memo[kind, t] = generation_metrics(model_cfg, params, g, prefixes, gen_key(t),
                                               t, ec, max_total, **kw)
        return memo[kind, t][0]

    out: dict[str, Any] = {"grammar": g.name, "max_total_len": max_total}
    out["generation"] = {
        "cut0": {tkey(t): run(0, [[]] * ec.n_generate, t, with_entropy=True)
                 for t in ec.temperatures},
        f"cut{ec.prefix_len}": {tkey(t): run(1, cut, t) for t in ec.temperatures}}
    if ec.subtrees:  # the valid cut0 generations vs the true strings behind the cut prefixes
        out["diversity"] = {"subtrees": {tkey(t): subtree_diversity(g, memo[0, t][1], base)
                                         for t in ec.temperatures}}
    truth = true_strings(g, k_dp, ec.n_dp, ec, "distribution")
    ok = membership.check_strings(g, truth)
    out["truth"] = {"accuracy": float(ok.mean()), "nll_true": _string_nll(g, truth[: ec.n_entropy]),
                    "mean_len": float(np.mean([len(s) for s in truth])),
                    "distinct_frac": len({tuple(s) for s in truth}) / len(truth)}
    out["truth"]["nll_true_per_token"] = out["truth"]["nll_true"] / (
        np.mean([len(s) + 1 for s in truth[: ec.n_entropy]]))
    out["distribution"], out["loss"] = distribution_metrics(model_cfg, params, g, truth, ec,
                                                            max_total)
    if ec.robust:
        rate = task.corrupt_rate if ec.corrupt_rate < 0 else ec.corrupt_rate
        arr = np.zeros((len(cut), ec.prefix_len), np.int32)
        for r, p in enumerate(cut):
            arr[r, : len(p)] = p
        lens = np.array([len(p) for p in cut], np.int32)
        bad, flipped = map(np.asarray, corrupt_tokens(k_corrupt, jnp.asarray(arr),
                                                      jnp.asarray(lens), rate, g.num_sym))
        corrupted = [bad[r, : lens[r]].tolist() for r in range(len(cut))]
        rob: dict[str, Any] = {"corrupt_rate": rate, "prefix_len": ec.prefix_len,
                               "flipped_mean": float(flipped.sum(1).mean())}
        flips = flipped.sum(1).tolist()
        for t in ec.robust_temperatures:
            m = run(2, corrupted, t, wildcard=True, flips=flips)
            rob[tkey(t)] = {"corrupted_acc": m["accuracy"], "repaired_acc": m["repaired_acc"],
                            "repairs_hist": m["repairs_hist"], "repairs_mean": m["repairs_mean"],
                            "clean_acc": run(1, cut, t)["accuracy"]}
        out["robustness"] = rob
    return out


def _run(loaded: Any, ec: EvalConfig) -> dict[str, Any]:
    """`mode=eval` for CFG runs: the metrics of the model and, with `control`, of its init."""
    exp = loaded.exp
    doc: dict[str, Any] = {"eval_config": dataclasses.asdict(ec),
                           **evaluate_cfg(exp.model.cfg, loaded.host_params, exp.task, ec)}
    if ec.control:
        control = jax.device_get(loaded.control_params())
        doc["control"] = evaluate_cfg(exp.model.cfg, control, exp.task, ec)
    return doc


def _plots(doc: dict[str, Any], out_dir: Any) -> None:
    if doc["eval_config"]["plots"]:
        write_plots(doc, out_dir)


EVALUATOR = Handler(settings=EvalConfig, run=_run, plots=_plots)
