"""ConfigDict -> validated, frozen dataclasses: the only door between configs and code.

`configs/<family>.py:get_config(arg)` returns an `ml_collections.ConfigDict`; `from_config_dict`
checks every key and value *before any JAX work* and returns an `ExperimentConfig`. Every error is
one line naming the dotted key and the bad value.
"""

from __future__ import annotations

import dataclasses
import json
import re
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

POSITION_SCHEMES = ("absolute", "rotary", "relative", "position_only", "uniform")
COMPUTE_DTYPES = ("float32", "bfloat16")
SCHEDULES = ("cosine", "linear", "constant", "wsd")
ATTENTION_IMPLEMENTATIONS = ("xla", "cudnn", "splash")  # models/attention.py
ATTENTION_FALLBACKS = ("warn", "error")
REMAT_POLICIES = ("none", "full", "save_dots", "offload")  # models/remat.py


class ConfigError(ValueError):
    """A bad config value; the message names the dotted key and the value."""


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """GPT-2 shape and numerics. d_mlp=0 means 4*d_model; vocab_size=0 means the task's."""

    num_layers: int = 12
    num_heads: int = 12
    d_model: int = 768
    d_mlp: int = 0
    vocab_size: int = 0
    max_len: int = 1024
    pos: str = "absolute"
    rel_max_distance: int = 128  # `relative` / `position_only`: distances are clipped here
    rope_base: float = 10_000.0
    dropout: float = 0.0
    tie_embeddings: bool = True
    compute_dtype: str = "float32"  # parameters and optimizer state are always float32
    remat: bool = False  # = remat_policy "full"; kept for older configs
    remat_policy: str = ""  # "" = from `remat`; none | full | save_dots | offload (remat.py)
    attention: str = "xla"  # xla | cudnn (GPU) | splash (TPU); see models/attention.py
    attention_fallback: str = "warn"  # warn | error when `attention` cannot run

    @property
    def remat_mode(self) -> str:
        """The resolved remat policy: `remat_policy`, else "full" if `remat` else "none"."""
        return self.remat_policy or ("full" if self.remat else "none")

    @property
    def head_dim(self) -> int:
        return self.d_model // self.num_heads

    @property
    def mlp_dim(self) -> int:
        return self.d_mlp or 4 * self.d_model


@dataclasses.dataclass(frozen=True)
class OptimConfig:
    """AdamW with warmup then decay to `final_lr_frac * lr`."""

    lr: float = 3e-4
    b1: float = 0.9
    b2: float = 0.98
    eps: float = 1e-8
    weight_decay: float = 0.1
    warmup_steps: int = 1000
    schedule: str = "linear"  # or cosine, constant, wsd (train/optim.py: lr_schedule)
    final_lr_frac: float = 0.0
    decay_frac: float = 0.2  # "wsd": the share of train.num_steps that decays (the end of the run)
    grad_clip: float = 1.0  # global-norm clip; 0 disables
    grad_accum: int = 1


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    batch_size: int = 96
    num_steps: int = 100_000
    log_every: int = 50
    eval_every: int = 1000
    eval_batches: int = 4
    checkpoint_every: int = 1000
    keep_checkpoints: int = 3
    peak_flops_per_device: float = 0.0  # 0 = look the device kind up; unknown -> MFU "n/a"
    device_memory_bytes: int = 0  # 0 = ask the device (memory_stats bytes_limit; CPU: no check)
    # "WORKDIR[:STEP]": start from another run's params (fresh optimizer; train/init_from.py)
    init_from: str = ""
    # with init_from: take the source's whole train state (params, optimizer moments, step) and
    # continue its step count and data under this run's schedule (extending an optim.schedule=wsd
    # run from a checkpoint before its decay continues it exactly)
    init_from_state: bool = False
    # LoRA on the `init_from` run (train/lora_base.py): rank r on the Q and V projections of every
    # block and rank `lora_embed_rank` on the token embedding (-1 = 2r, the paper's "qv r / e 2r");
    # only the adapters train and are saved. 0 = off (full fine-tuning or pretraining).
    lora_rank: int = 0
    lora_embed_rank: int = -1
    # Every N steps run the family's `eval` handler (config section `eval`, no control) on the
    # current params and log its scalars as eval/... (learning curves); 0 = never.
    analysis_every: int = 0

    @property
    def lora_ranks(self) -> tuple[int, int] | None:
        """(qv rank, embedding rank), or None when LoRA is off."""
        embed = 2 * self.lora_rank if self.lora_embed_rank < 0 else self.lora_embed_rank
        return (self.lora_rank, embed) if self.lora_rank or embed else None


@dataclasses.dataclass(frozen=True)
class MeshConfig:
    """Device mesh shape. One entry may be -1 (= all remaining devices)."""

    data: int = -1
    fsdp: int = 1
    tensor: int = 1
    distributed: bool = False  # call jax.distributed.initialize() (multi-host pods)


@dataclasses.dataclass(frozen=True)
class TaskConfig:
    """Which data family and its keyword arguments (validated by the task's own constructor)."""

    name: str = "cfg"
    kwargs: Mapping[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class ExperimentConfig:
    mode: str = "train"
    seed: int = 0
    # An analysis mode writes to workdir/<mode>-<tag>/ instead of workdir/<mode>/, so a second
    # eval (another decoder, another checkpoint) of the same run does not overwrite the first.
    tag: str = ""
    task: TaskConfig = dataclasses.field(default_factory=TaskConfig)
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    optim: OptimConfig = dataclasses.field(default_factory=OptimConfig)
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    mesh: MeshConfig = dataclasses.field(default_factory=MeshConfig)
    # Analysis-mode sections: the task family's settings dataclass (physics_lm/modes.py), filled
    # with its defaults; None where the family has no such mode.
    eval: Any = None
    probe: Any = None
    sample: Any = None
    attention: Any = None
    regret: Any = None

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True, default=_jsonable)


def _jsonable(x: Any) -> Any:
    if isinstance(x, Mapping):
        return dict(x)
    if isinstance(x, tuple | set):
        return list(x)
    raise TypeError(f"not JSON-able: {x!r}")


_SECTIONS: dict[str, type] = {
    "model": ModelConfig,
    "optim": OptimConfig,
    "train": TrainConfig,
    "mesh": MeshConfig,
}


def parse_config_arg(arg: str | None) -> dict[str, str]:
    """The `:k=v,flag` argument of a config file (`--config=configs/x.py:k=v,flag`); flag -> "1"."""
    out = {}
    for part in filter(None, (arg or "").split(",")):
        k, _, v = part.partition("=")
        out[k] = v or "1"
    return out


def parse_init_from(spec: str) -> tuple[Path, int | None]:
    """`train.init_from`'s "WORKDIR[:STEP]" -> (workdir, step or None for the latest)."""
    path, sep, step = spec.rpartition(":")
    return (Path(path), int(step)) if sep and step.isdigit() else (Path(spec), None)


def _to_dict(cd: Any) -> dict:
    return cd.to_dict() if hasattr(cd, "to_dict") else dict(cd)


def _type_name(hint: Any) -> str:
    return getattr(hint, "__name__", None) or str(hint).replace("typing.", "")


def coerce_value(key: str, value: Any, hint: Any) -> Any:
    """`value` checked against the type annotation `hint` (int, float, bool, str, tuple[X, ...]
    and unions of those): ints widen to floats, sequences become tuples; anything else is a
    ConfigError naming the dotted key and the value."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        for arm in typing.get_args(hint):
            try:
                return coerce_value(key, value, arm)
            except ConfigError:
                continue
    elif typing.get_origin(hint) is tuple:
        elem = typing.get_args(hint)[0]
        if isinstance(value, Sequence) and not isinstance(value, str | bytes):
            return tuple(coerce_value(f"{key}[{i}]", v, elem) for i, v in enumerate(value))
    elif hint is bool:
        if isinstance(value, bool):
            return value
    elif hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif hint is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
    elif hint is Any or isinstance(value, hint):
        return value
    raise ConfigError(f"{key}={value!r}: expected {_type_name(hint)}")


def build_section(name: str, cls: type, raw: Mapping[str, Any] | None) -> Any:
    """The one section parser: a frozen dataclass `cls` from config section `name`.

    Unknown keys and values of the wrong type are a ConfigError naming `name.key`; `cls` may add
    cross-field checks in `__post_init__` (raising ConfigError).
    """
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in (raw or {}).items():
        if key not in fields:
            raise ConfigError(f"unknown config key {name}.{key}={value!r}; "
                              f"known: {', '.join(sorted(fields))}")
        kwargs[key] = coerce_value(f"{name}.{key}", value, hints[key])
    return cls(**kwargs)


def check_dataset(key: str, value: str, family: str) -> None:
    """An `eval.dataset` setting: "" (sample the problems) or "tfds:<builder>/<config>" naming a
    frozen set (physics_lm/data/tfds) that `family`'s evaluator reads. Imports neither TFDS nor
    JAX, so a typo fails at config load, before any training."""
    if not value:
        return
    from physics_lm.data.tfds import BUILDERS, PREFIX, parse_name

    mine = [b for b, (_, fam) in BUILDERS.items() if fam == family]
    example = f"{PREFIX}{mine[0]}/<config>" if mine else "none"
    if not value.startswith(PREFIX):
        raise ConfigError(f"{key}={value!r}: expected '' (sample) or {example}")
    try:
        builder, _ = parse_name(value[len(PREFIX):])
    except ValueError as e:
        raise ConfigError(f"{key}={value!r}: {e}") from None
    if builder not in mine:
        raise ConfigError(f"{key}={value!r}: {builder} sets are not read by task.name="
                          f"{family!r}; its sets: {example}")


def _require(cond: bool, key: str, value: Any, why: str) -> None:
    if not cond:
        raise ConfigError(f"{key}={value!r}: {why}")


def _check_model(m: ModelConfig) -> None:
    for k in ("num_layers", "num_heads", "d_model", "max_len"):
        _require(getattr(m, k) >= 1, f"model.{k}", getattr(m, k), "must be >= 1")
    _require(m.d_model % m.num_heads == 0, "model.num_heads", m.num_heads,
             f"must divide model.d_model={m.d_model}")
    _require(m.pos in POSITION_SCHEMES, "model.pos", m.pos, f"must be one of {POSITION_SCHEMES}")
    _require(m.pos != "rotary" or m.head_dim % 2 == 0, "model.d_model", m.d_model,
             "rotary needs an even head dim")
    _require(m.compute_dtype in COMPUTE_DTYPES, "model.compute_dtype", m.compute_dtype,
             f"must be one of {COMPUTE_DTYPES}")
    _require(0.0 <= m.dropout < 1.0, "model.dropout", m.dropout, "must be in [0, 1)")
    _require(m.d_mlp >= 0 and m.vocab_size >= 0, "model.d_mlp/vocab_size", (m.d_mlp, m.vocab_size),
             "must be >= 0 (0 = default)")
    _require(m.rel_max_distance >= 1, "model.rel_max_distance", m.rel_max_distance, "must be >= 1")
    _require(m.remat_policy in ("", *REMAT_POLICIES), "model.remat_policy", m.remat_policy,
             f"must be one of {REMAT_POLICIES} (or empty: from model.remat)")
    _require(not (m.remat and m.remat_policy == "none"), "model.remat_policy", m.remat_policy,
             "contradicts model.remat=True (set one of them)")
    _require(m.attention in ATTENTION_IMPLEMENTATIONS, "model.attention", m.attention,
             f"must be one of {ATTENTION_IMPLEMENTATIONS}")
    _require(m.attention_fallback in ATTENTION_FALLBACKS, "model.attention_fallback",
             m.attention_fallback, f"must be one of {ATTENTION_FALLBACKS}")
    if m.attention_fallback == "error":
        from physics_lm.models.attention import model_fallback_reason

        why = model_fallback_reason(m)
        _require(why is None, "model.attention", m.attention,
                 f"{why} (model.attention_fallback=error)")


def wsd_decay_start(o: OptimConfig, num_steps: int) -> int:
    """The step where "wsd" leaves its constant phase: the last `decay_frac` of the run decays."""
    return num_steps - round(o.decay_frac * num_steps)


def _check_optim(o: OptimConfig, t: TrainConfig) -> None:
    _require(o.lr > 0, "optim.lr", o.lr, "must be > 0")
    _require(0 <= o.b1 < 1 and 0 <= o.b2 < 1, "optim.b1/b2", (o.b1, o.b2), "must be in [0, 1)")
    _require(o.weight_decay >= 0, "optim.weight_decay", o.weight_decay, "must be >= 0")
    _require(o.schedule in SCHEDULES, "optim.schedule", o.schedule, f"must be one of {SCHEDULES}")
    _require(0 <= o.final_lr_frac <= 1, "optim.final_lr_frac", o.final_lr_frac, "must be in [0, 1]")
    _require(0 <= o.warmup_steps <= t.num_steps, "optim.warmup_steps", o.warmup_steps,
             f"must be in [0, train.num_steps={t.num_steps}]")
    if o.schedule == "wsd":
        decay = t.num_steps - wsd_decay_start(o, t.num_steps)
        _require(0 <= o.decay_frac <= 1 and o.warmup_steps + decay <= t.num_steps,
                 "optim.decay_frac", o.decay_frac, f"must be in [0, 1] and leave the warmup "
                 f"(optim.warmup_steps={o.warmup_steps}) room: {decay} decay steps of "
                 f"train.num_steps={t.num_steps}")
    _require(o.grad_clip >= 0, "optim.grad_clip", o.grad_clip, "must be >= 0 (0 disables)")
    _require(o.grad_accum >= 1 and t.batch_size % o.grad_accum == 0, "optim.grad_accum",
             o.grad_accum, f"must be >= 1 and divide train.batch_size={t.batch_size}")


def _check_train(t: TrainConfig) -> None:
    for k in ("batch_size", "num_steps", "log_every", "eval_every", "checkpoint_every",
              "keep_checkpoints"):
        _require(getattr(t, k) >= 1, f"train.{k}", getattr(t, k), "must be >= 1")
    _require(t.eval_batches >= 0, "train.eval_batches", t.eval_batches, "must be >= 0")
    _require(t.analysis_every >= 0, "train.analysis_every", t.analysis_every, "must be >= 0")
    _require(t.lora_rank >= 0, "train.lora_rank", t.lora_rank, "must be >= 0 (0 = off)")
    _require(t.lora_embed_rank >= -1, "train.lora_embed_rank", t.lora_embed_rank,
             "must be >= 0, or -1 for 2 * train.lora_rank")
    _require(not t.lora_ranks or bool(t.init_from), "train.lora_rank", t.lora_rank,
             "LoRA needs the base run: set train.init_from=WORKDIR[:STEP]")
    _require(not t.init_from_state or (bool(t.init_from) and not t.lora_ranks),
             "train.init_from_state", t.init_from_state,
             "needs train.init_from=WORKDIR[:STEP] and no LoRA (the adapters have no source state)")
    _require(t.device_memory_bytes >= 0, "train.device_memory_bytes", t.device_memory_bytes,
             "must be >= 0 (0 = ask the device)")


def _check_mesh(mesh: MeshConfig, batch_size: int, grad_accum: int) -> None:
    shape = (mesh.data, mesh.fsdp, mesh.tensor)
    _require(all(s >= 1 or s == -1 for s in shape) and shape.count(-1) <= 1, "mesh", shape,
             "entries must be >= 1, at most one may be -1")
    if -1 not in (mesh.data, mesh.fsdp):  # else the device count decides (train/setup.py)
        dp, micro = mesh.data * mesh.fsdp, batch_size // grad_accum
        _require(micro % dp == 0, "mesh.data*mesh.fsdp", dp,
                 f"must divide the micro-batch train.batch_size/optim.grad_accum={micro}")


def _analysis_sections(raw: Mapping[str, Any], family: str) -> dict[str, Any]:
    """The eval/probe/sample/attention sections, parsed by the task family's settings (modes.py)."""
    from physics_lm import modes

    out = {}
    for mode in modes.ANALYSIS_MODES:
        handler = modes.family_handler(mode, family)
        if handler is None:
            if raw.get(mode):
                raise ConfigError(f"config section {mode!r} given, but task.name={family!r} has "
                                  f"no {mode} mode; families with it: "
                                  f"{', '.join(modes.HANDLERS[mode]) or 'none'}")
            out[mode] = None
        else:
            out[mode] = build_section(mode, handler.settings, _to_dict(raw.get(mode) or {}))
    return out


_TAG = re.compile(r"[A-Za-z0-9._-]*")


def from_config_dict(cd: Any) -> ExperimentConfig:
    """Validates a ConfigDict (or dict), every section whatever the mode, and freezes it.

    Builds no JAX arrays.
    """
    from physics_lm import modes

    raw = _to_dict(cd)
    known = {"mode", "seed", "tag", "task", *_SECTIONS, *modes.ANALYSIS_MODES}
    for key in raw:
        if key not in known:
            raise ConfigError(f"unknown config key {key}={raw[key]!r}; "
                              f"known: {', '.join(sorted(known))}")
    mode = raw.get("mode", "train")
    _require(mode in modes.MODES, "mode", mode, f"must be one of {tuple(modes.MODES)}")
    seed = raw.get("seed", 0)
    _require(isinstance(seed, int) and seed >= 0, "seed", seed, "must be an int >= 0")
    sections = {name: build_section(name, cls, _to_dict(raw.get(name, {})))
                for name, cls in _SECTIONS.items()}
    tag = raw.get("tag", "")
    _require(isinstance(tag, str) and _TAG.fullmatch(tag) is not None, "tag", tag,
             "must be letters, digits, '.', '_' or '-' (it names the folder workdir/<mode>-<tag>)")
    _require(not tag or mode in modes.ANALYSIS_MODES, "tag", tag,
             f"names an analysis mode's output folder; mode={mode!r} writes none")
    task_raw = _to_dict(raw.get("task", {}))
    task = TaskConfig(name=task_raw.pop("name", "cfg"), kwargs=task_raw)
    _require(isinstance(task.name, str), "task.name", task.name, "must be a string")
    cfg = ExperimentConfig(mode=mode, seed=seed, tag=tag, task=task, **sections,
                           **_analysis_sections(raw, task.name))
    _check_model(cfg.model)
    _check_train(cfg.train)
    _check_optim(cfg.optim, cfg.train)
    _check_mesh(cfg.mesh, cfg.train.batch_size, cfg.optim.grad_accum)
    if mode in modes.ANALYSIS_MODES and getattr(cfg, mode) is None:
        modes.require_handler(mode, task.name)  # raises: this family has no such mode
    return cfg
