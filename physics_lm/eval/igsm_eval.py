"""Part 2.1 evaluation of an iGSM model: accuracy by op cell, in and out of distribution.

For every cell of `cells.eval_cells(task)` (med: op<=15, op=15, op=20..23, reask; always the test
template bins; a cell is a pure function of (eval seed, cell)), `n` problems are drawn on device,
the prompt `BOS problem [question] SOL` is decoded by the jitted KV-cache decoder (greedy, beam
search or sampling), and each generation is judged by the host judge (`text/judge.py`, the
official `true_correct` semantics). Per cell (`cells[name]`):
  n, accuracy and its 95% Wilson interval (acc_lo, acc_hi); shortest_frac (of the correct
  solutions, the share with no unnecessary parameter: the paper's "level-1" evidence);
  unnecessary_params / unnecessary_ops (mean per correct solution: parameters outside the
  necessary set, and computation steps beyond the problem's op); back_mean ([BACK] sentences per
  generation); truncated (no answer within max_new tokens and no error in the complete
  sentences: a cut row that erred before counts its error); extended (rows the first budget
  cut while every sentence was right, decoded again with the whole budget); error_kinds
  (histogram of the first error's kind over wrong generations; `no_answer`: stopped at EOS with
  right steps but no answer field, never counted correct; a row that stopped without one and
  erred earlier counts that error); op_mean; by_op ({op: {n, accuracy}}: a cell such as
  op<=15 mixes ops, and accuracy falls with op); in_distribution; templates ("test", or "seen"
  for the diagnostic `seen:op<=M` / `seen:op=M` cells of the training template bins, evaluated
  only when named in `eval.cells`).
Every generation with its verdict goes to `eval/igsm_generations.jsonl` (cell, op, problem,
prompt, generated text, solution, answer, verdict fields), so every number can be recomputed
from it. Plots: accuracy by cell (ID vs OOD) and error kinds.

The `eval` config section (`IGSMEvalConfig`): n=4096 (the paper's count), cells=() (all; or a
tuple of names, e.g. `--config.eval.cells="('op<=15','reask')"`), decoder="greedy" | "beam" |
"sample", beam=4, temperature=1.0 (decoder="sample"), max_new=0 (0 = enough for the cell's op
bound, at most 2048 - prompt; rows it cuts while still right are decoded again with 2048 - prompt,
greedy and beam), decode_batch=256, seed=0, step=-1 (latest checkpoint),
control=False (also the random-init model), plots=True, dataset="" (sample each cell) or
"tfds:igsm_eval_cells/<config>": read the first n problems of each cell from that frozen set
(physics_lm/data/tfds; built from the eval seed in its name: at the set's own n, default 4,096,
they are the problems sampling would draw; a smaller eval.n reads a prefix of them, which is not
what sampling draws at that n: a sampled row depends on n), data_dir="" (where the set was
built; "" = TFDS's default), teacher_forced=True
(also `teacher_forced[name]`: the model's loss on the cell's reference solutions by kind of token,
`eval/igsm_token_kinds.py`: which decisions it has not learned; not from the generations).
"""

from __future__ import annotations

import collections
import dataclasses
import math
import time
import zlib
from collections.abc import Callable
from typing import Any

import jax
import numpy as np
from absl import logging

from physics_lm.config import ConfigError, ModelConfig, check_dataset
from physics_lm.data.igsm import cells as cells_lib
from physics_lm.data.igsm.task import IGSMTask
from physics_lm.data.igsm.text.judge import judge_problem, split_steps
from physics_lm.data.igsm.text.parser import ProblemParseError, parse_problem
from physics_lm.data.igsm.text.vocab import get_vocab
from physics_lm.eval import igsm_token_kinds as token_kinds
from physics_lm.eval.beam import beam_search
from physics_lm.eval.decode import DecodeResult, completions, generate
from physics_lm.modes import Handler

DECODERS = ("greedy", "beam", "sample")
_PROMPT_BUCKET = 64  # prompt buffers are rounded up to this: few compiled decoders per eval
MAX_TOTAL = 2048  # the paper's generation budget (prompt + solution)
_DECODE_STREAM = zlib.crc32(b"decode") & 0x7FFFFFFF
_EXTEND_STREAM = zlib.crc32(b"extend") & 0x7FFFFFFF


@dataclasses.dataclass(frozen=True)
class IGSMEvalConfig:
    """The `eval` section of an iGSM run (module docstring)."""

    n: int = 4096
    cells: tuple[str, ...] = ()  # () = every cell (a tuple either way: overridable from flags)
    decoder: str = "greedy"
    beam: int = 4
    temperature: float = 1.0
    max_new: int = 0
    decode_batch: int = 256
    seed: int = 0
    step: int = -1
    control: bool = False
    plots: bool = True
    dataset: str = ""
    data_dir: str = ""
    teacher_forced: bool = True

    def __post_init__(self) -> None:
        check_dataset("eval.dataset", self.dataset, "igsm")
        for key in ("n", "beam", "decode_batch"):
            if getattr(self, key) < 1:
                raise ConfigError(f"eval.{key}={getattr(self, key)!r}: must be >= 1")
        if self.decoder not in DECODERS:
            raise ConfigError(f"eval.decoder={self.decoder!r}: one of {DECODERS}")
        if self.max_new < 0 or self.temperature < 0:
            raise ConfigError(f"eval.max_new/temperature={(self.max_new, self.temperature)!r}: "
                              "must be >= 0")


def in_distribution(task: IGSMTask, cell: str) -> bool:
    """Whether the cell's ops lie in the training range (op<=M, op=M, and their `seen:` twins);
    OOD ops and reask not."""
    cell = cell.removeprefix(cells_lib.SEEN)
    return cell.startswith("op<=") or cell == f"op={task.resolved_max_op}"


def decode_key(seed: int, cell: str) -> jax.Array:
    """The decoder's key for `cell` (sampling): a function of (eval seed, cell name), like the
    cell's problems, so a cell's generations do not depend on which other cells are listed; a
    stream apart from the one that draws the problems."""
    return jax.random.fold_in(cells_lib.cell_key(seed, cell), _DECODE_STREAM)


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval of a binomial proportion k/n."""
    if n == 0:
        return (math.nan, math.nan)
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (max(0.0, centre - half), min(1.0, centre + half))


def _decode(model_cfg: ModelConfig, params: Any, key: jax.Array, prompt: np.ndarray,
            prompt_len: np.ndarray, max_new: int, ec: IGSMEvalConfig) -> DecodeResult:
    vocab = get_vocab()
    kw = dict(max_new=max_new, eos_id=vocab.eos_id, pad_id=vocab.pad_id)
    if ec.decoder == "beam":
        return beam_search(model_cfg, params, prompt, prompt_len, beam=ec.beam, **kw)
    temperature = ec.temperature if ec.decoder == "sample" else 0.0
    return generate(model_cfg, params, key, prompt, prompt_len, temperature=temperature, **kw)


def _budget(model_cfg: ModelConfig, task: IGSMTask, P: int, ec: IGSMEvalConfig) -> int:
    """max_new for a cell: enough for its op bound (~20 tokens per operation, measured), at most
    MAX_TOTAL - P; learned absolute positions cannot go past model.max_len."""
    if task.reask:  # the reasked op is capped at twice the drawn one (gen/reask.py)
        op_bound = 2 * task.op
    else:
        op_bound = task.op if task.op is not None else task.resolved_max_op
    # rounded up to the prompt bucket: nearby cells share one compiled decoder (rows stop at EOS,
    # so a larger budget costs cache memory, not steps)
    need = -(-(24 * op_bound + 64) // _PROMPT_BUCKET) * _PROMPT_BUCKET
    max_new = ec.max_new or min(need, MAX_TOTAL - P)
    if model_cfg.pos == "absolute" and P + max_new > model_cfg.max_len:
        raise ConfigError(f"eval: prompt {P} + max_new {max_new} tokens exceed model.max_len="
                          f"{model_cfg.max_len}, and absolute positions cannot go past it; set "
                          f"eval.max_new <= {model_cfg.max_len - P} (other schemes can)")
    return max_new


def _longest_budget(model_cfg: ModelConfig, P: int, ec: IGSMEvalConfig) -> int:
    """The second pass's max_new: the paper's MAX_TOTAL - P (learned absolute positions: up to
    model.max_len); none past the first (0 returned) when the user fixed eval.max_new or the
    decoder samples (a second pass would draw a new sample, not continue the cut one)."""
    if ec.max_new or ec.decoder == "sample":
        return 0
    total = model_cfg.max_len if model_cfg.pos == "absolute" else MAX_TOTAL
    return max(total - P, 0)


def _cut_while_right(row: dict[str, Any]) -> bool:
    """Whether a generation was cut by the budget with no error in its complete sentences
    (`_judged` calls only those "truncated")."""
    return not row["eos"] and row["error_kind"] == "truncated"


# decode(prompt_BxP, prompt_len_B, max_new, key) -> DecodeResult: another decoder for a cell
# (Part 2.2's retry upon regret, `eval/regret_run.py`).
CellDecoder = Callable[[np.ndarray, np.ndarray, int, jax.Array], DecodeResult]
RECORDED_AUX = ("retries", "flags")  # hook carry fields copied into each generation's row


def _aux_rows(out: DecodeResult) -> list[dict[str, Any]]:
    aux = out.aux if isinstance(out.aux, dict) else {}
    got = {k: np.asarray(jax.device_get(aux[k])).tolist() for k in RECORDED_AUX if k in aux}
    return [{k: v[b] for k, v in got.items()} for b in range(out.tokens.shape[0])]


def cell_problems(task: IGSMTask, name: str, ec: IGSMEvalConfig
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(tokens [n, T], sol_pos [n], op [n]) of cell `name`: sampled, or read from eval.dataset."""
    if ec.dataset:
        from physics_lm.data.tfds import read
        return read.igsm_cell(ec.dataset.removeprefix("tfds:"), ec.data_dir, task, name, ec.n)
    batch = jax.device_get(cells_lib.cell_batch(task, ec.seed, name, ec.n))
    return tuple(np.asarray(x) for x in (batch.tokens, batch.labels["sol_pos"],
                                         batch.labels["op"]))


def generate_cell(model_cfg: ModelConfig, params: Any, task: IGSMTask, name: str,
                  ec: IGSMEvalConfig, key: jax.Array,
                  timing: dict[str, float] | None = None,
                  decode: CellDecoder | None = None,
                  problems: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
                  ) -> list[dict[str, Any]]:
    """Draws (or reads) the cell's problems (or takes `cell_problems`' `problems`), decodes them
    in batches and judges every generation; adds the seconds spent sampling (compile included)
    and decoding + judging to `timing`. `decode` replaces the decoder of `ec` (rows then also
    carry `RECORDED_AUX` fields)."""
    vocab = get_vocab()
    timing = {} if timing is None else timing
    t0 = time.perf_counter()
    tokens, sol_pos, ops = problems or cell_problems(task, name, ec)
    t1 = time.perf_counter()
    timing["sample_s"] = timing.get("sample_s", 0.0) + t1 - t0
    lens = sol_pos + 1  # BOS problem [question] SOL
    P = int(-(-lens.max() // _PROMPT_BUCKET) * _PROMPT_BUCKET)
    prompts = np.full((ec.n, P), vocab.pad_id, np.int32)
    width = min(P, tokens.shape[1])
    prompts[:, :width] = tokens[:, :width]
    prompts[np.arange(P)[None, :] >= lens[:, None]] = vocab.pad_id
    max_new = _budget(model_cfg, task, P, ec)
    # Batches of similar expected length (the sampler's own solution length): the decoder stops
    # when every row of a batch has finished, so a long row no longer keeps short ones waiting.
    order = np.argsort(np.argmax(tokens == vocab.ans_id, axis=1) - sol_pos, kind="stable")
    by_row: dict[int, dict[str, Any]] = {}

    def decode_rows(rows: np.ndarray, budget: int, stream: jax.Array) -> None:
        B, m = ec.decode_batch, len(rows)
        for start in range(0, m, B):
            idx = rows[np.arange(start, start + B) % m]  # the last chunk repeats rows: one shape
            k = jax.random.fold_in(stream, start)
            if decode is None:
                out = _decode(model_cfg, params, k, prompts[idx], lens[idx], budget, ec)
            else:
                out = decode(prompts[idx], lens[idx], budget, k)
            extras = _aux_rows(out)
            for j, (gen, done) in enumerate(completions(out)[: min(B, m - start)]):
                r = int(idx[j])
                prompt_ids = prompts[r, : lens[r]].tolist()
                problem_text, _, _ = vocab.split_example(prompt_ids)
                _, solution, answer = vocab.split_example(prompt_ids + gen
                                                          + [vocab.eos_id] * done)
                by_row[r] = {**_judged(name, problem_text, vocab.decode(prompt_ids),
                                       vocab.decode(gen), solution, answer, int(ops[r]),
                                       done), **extras[j]}

    decode_rows(order, max_new, key)
    # Rows the budget cut while every sentence so far was right (a correct solution that also
    # defines unnecessary parameters can outgrow it) are decoded again with the paper's whole
    # budget: cutting them would count them wrong and hide them from the level-1 numbers.
    longer = _longest_budget(model_cfg, P, ec)
    cut = [r for r in order if _cut_while_right(by_row[int(r)])] if longer > max_new else []
    if cut:
        decode_rows(np.asarray(cut), longer, jax.random.fold_in(key, _EXTEND_STREAM))
        for r in cut:
            by_row[int(r)]["extended"] = True
    timing["decode_s"] = timing.get("decode_s", 0.0) + time.perf_counter() - t1
    return [by_row[r] for r in range(ec.n)]


def _judged(cell: str, problem_text: str, prompt: str, generated: str, solution: str | None,
            answer: str | None, op: int, done: bool) -> dict[str, Any]:
    """One generation with its verdict (a row of igsm_generations.jsonl)."""
    row: dict[str, Any] = {"cell": cell, "op": op, "problem": problem_text, "prompt": prompt,
                           "generated": generated, "solution": solution, "answer": answer,
                           "eos": done}
    try:
        problem = parse_problem(problem_text)
    except ProblemParseError as e:  # our own sampler's text: a generator bug, not the model's
        raise RuntimeError(f"cell {cell}: the sampler's problem does not parse: {e}") from e
    if solution is None or answer is None:
        # Cut by the budget (its complete sentences) or stopped at EOS without an answer field
        # (all of it): the steps are judged, so an earlier error is the first error (the regret
        # detector's recall needs it). BACK sentences still count: a retry model that loops on
        # them never reaches an answer.
        text = solution or ""
        if not done:
            text = text[: text.rfind(".") + 1]
        verdict = judge_problem(problem, text, None).to_dict() if done or text.strip(" .") else {}
        if done or verdict.get("first_error") is not None:
            row.update(verdict, correct=False, shortest=False)
            if verdict["correct"]:  # every step right: the missing answer is the first error
                row.update(error_kind="no_answer", first_error=None,
                           reason="stopped (EOS) without an answer")
        else:
            row.update(correct=False, shortest=False, n_unnecessary=0,
                       n_back=split_steps(generated)[1], n_ops=0, first_error=None,
                       error_kind="truncated",
                       reason="no answer within max_new, every complete sentence right")
    else:
        row.update(judge_problem(problem, solution, answer).to_dict())
    row["unnecessary_ops"] = max(row["n_ops"] - problem.n_op, 0) if row["correct"] else None
    return row


def summarize(rows: list[dict[str, Any]], in_distribution: bool) -> dict[str, Any]:
    """The per-cell metrics of the module docstring, from judged rows alone."""
    n = len(rows)
    correct = [r for r in rows if r["correct"]]
    k = len(correct)
    lo, hi = wilson(k, n)
    mean = lambda xs: float(np.mean(xs)) if len(xs) else None
    kinds = collections.Counter(r["error_kind"] or "unknown" for r in rows if not r["correct"])
    ops = collections.defaultdict(list)
    for r in rows:
        ops[r["op"]].append(r["correct"])
    return {"n": n, "accuracy": k / n if n else None, "acc_lo": lo, "acc_hi": hi,
            "shortest_frac": mean([r["shortest"] for r in correct]),
            "unnecessary_params": mean([r["n_unnecessary"] for r in correct]),
            "unnecessary_ops": mean([r["unnecessary_ops"] for r in correct]),
            "back_mean": mean([r["n_back"] for r in rows]),
            "back_mean_correct": mean([r["n_back"] for r in correct]),
            "truncated": sum(r["error_kind"] == "truncated" for r in rows),
            "extended": sum(bool(r.get("extended")) for r in rows),
            "error_kinds": dict(sorted(kinds.items())), "op_mean": mean([r["op"] for r in rows]),
            "by_op": {str(op): {"n": len(c), "accuracy": sum(c) / len(c)}
                      for op, c in sorted(ops.items())},
            "in_distribution": in_distribution,
            "templates": "seen" if rows and rows[0]["cell"].startswith(cells_lib.SEEN) else "test"}


def evaluate_igsm(model_cfg: ModelConfig, params: Any, task: IGSMTask, ec: IGSMEvalConfig,
                  tag: str = "model") -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """({"cells": {name: metrics}, "teacher_forced": {name: table} (with ec.teacher_forced),
    "throughput": ...}, judged rows) for one model."""
    cells = cells_lib.eval_cells(task, seen=True)
    names = list(ec.cells) or list(cells_lib.eval_cells(task))
    unknown = [c for c in names if c not in cells]
    if unknown:
        raise ConfigError(f"eval.cells={list(ec.cells)!r}: unknown {unknown}; known: {list(cells)}")
    out: dict[str, Any] = {}
    forced: dict[str, Any] = {}
    all_rows: list[dict[str, Any]] = []
    t0, done, timing = time.perf_counter(), 0, {}
    if len(set(names)) != len(names):
        raise ConfigError(f"eval.cells={list(ec.cells)!r}: a cell is named twice")
    for i, name in enumerate(names):
        t_sample = time.perf_counter()
        problems = cell_problems(cells[name], name, ec)
        timing["sample_s"] = timing.get("sample_s", 0.0) + time.perf_counter() - t_sample
        rows = generate_cell(model_cfg, params, cells[name], name, ec,
                             decode_key(ec.seed, name), timing, problems=problems)
        out[name] = summarize(rows, in_distribution(task, name))
        if ec.teacher_forced:
            forced[name] = token_kinds.teacher_forced(model_cfg, params, *problems[:2])
            logging.info("eval[%s] %s: teacher-forced loss %.3f per solution token; by kind %s",
                         tag, name, forced[name]["nll"], token_kinds.describe(forced[name]))
        all_rows += [{**r, "model": tag} for r in rows]
        done += len(rows)
        rate = done / (time.perf_counter() - t0)
        by_op = out[name]["by_op"]
        logging.info("eval[%s] %s: accuracy %.3f (n=%d)%s · %.1f problems/s · ETA %.0fs", tag,
                     name, out[name]["accuracy"], len(rows),
                     "; by op " + ", ".join(f"{op}: {m['accuracy']:.2f} ({m['n']})"
                                            for op, m in by_op.items()) if len(by_op) > 1 else "",
                     rate, (len(names) - i - 1) * ec.n / rate)
    seconds = time.perf_counter() - t0
    return {"cells": out, **({"teacher_forced": forced} if forced else {}), "throughput": {
        "problems_per_s": done / seconds, "seconds": seconds, "decoder": ec.decoder,
        "sample_s": timing["sample_s"],  # the cells' samplers, compile included
        "decode_problems_per_s": done / timing["decode_s"]}}, all_rows


def _run(loaded: Any, ec: IGSMEvalConfig) -> dict[str, Any]:
    exp = loaded.exp
    doc, rows = evaluate_igsm(exp.model.cfg, loaded.host_params, exp.task, ec)
    doc = {"eval_config": dataclasses.asdict(ec), "task": exp.task.describe(), **doc}
    if ec.control:
        control = jax.device_get(loaded.control_params())
        doc["control"], control_rows = evaluate_igsm(exp.model.cfg, control, exp.task, ec,
                                                     tag="control")
        rows += control_rows
    doc["records"] = {"generations": rows}
    return doc


def _plots(doc: dict[str, Any], out_dir: Any) -> None:
    if doc["eval_config"]["plots"]:
        from physics_lm.eval.igsm_plots import write_plots
        write_plots(doc, out_dir)


EVALUATOR = Handler(settings=IGSMEvalConfig, run=_run, plots=_plots)
