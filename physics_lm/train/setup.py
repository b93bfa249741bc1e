"""Everything a run builds before its first step: task, mesh, model, optimizer, sharded state.

State is born sharded: `jax.eval_shape(init)` -> logical specs -> mesh shardings ->
`jax.jit(init, out_shardings=...)`, or the latest checkpoint restored straight into those
shardings (any mesh: orbax reshards on restore).

LoRA (`train.lora_rank`): the state's params are the adapters only (`models/lora.py`; replicated,
they are small), so the optimizer state covers only them; the model's params are the frozen base
(`param_shardings`, `abstract_params`), a separate input of the step (`train/lora_base.py`).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from physics_lm.config import ConfigError, ExperimentConfig, ModelConfig
from physics_lm.data.batch import Task
from physics_lm.data.registry import build_task
from physics_lm.models import lora
from physics_lm.models.gpt2 import GPT2
from physics_lm.train import sharding
from physics_lm.train.checkpoint import Checkpointer, abstract_like
from physics_lm.train.optim import make_optimizer
from physics_lm.train.steps import STREAM_LORA, TrainState, init_params, init_state, stream_key


def resolve_model(model: ModelConfig, task: Task) -> ModelConfig:
    """Fills vocab_size from the task and checks the task fits the model."""
    vocab = model.vocab_size or task.vocab_size
    if vocab < task.vocab_size:
        raise ConfigError(f"model.vocab_size={model.vocab_size} is smaller than the task's "
                          f"vocabulary ({task.vocab_size})")
    if task.seq_len > model.max_len:
        raise ConfigError(f"task.seq_len={task.seq_len} is longer than model.max_len="
                          f"{model.max_len}")
    return dataclasses.replace(model, vocab_size=vocab)


@dataclasses.dataclass(frozen=True)
class Experiment:
    cfg: ExperimentConfig
    task: Task
    model: GPT2
    mesh: Mesh
    tx: optax.GradientTransformation
    state_shardings: Any  # TrainState of NamedShardings
    abstract_state: Any  # TrainState of ShapeDtypeStructs with shardings
    param_shardings: Any  # the model's params (= state_shardings.params unless LoRA)
    abstract_params: Any  # ShapeDtypeStructs of the model's params, with param_shardings

    @property
    def frozen_abstract(self) -> tuple[Any, ...]:
        """The step's inputs besides the state: (base params,) for LoRA, else ()."""
        return (self.abstract_params,) if self.cfg.train.lora_ranks else ()

    @property
    def batch_sharding(self) -> NamedSharding:
        return sharding.batch_sharding(self.mesh)

    def constrain_batch(self, tree: Any) -> Any:
        return jax.lax.with_sharding_constraint(tree, self.batch_sharding)


def build_experiment(cfg: ExperimentConfig, devices: Sequence[jax.Device] | None = None
                     ) -> Experiment:
    """Validates everything that needs the task and the devices, then builds (no arrays yet)."""
    task = build_task(cfg.task)
    model_cfg = resolve_model(cfg.model, task)
    mesh = sharding.make_mesh(cfg.mesh, devices)
    dp = sharding.data_parallel_size(mesh)
    micro = cfg.train.batch_size // cfg.optim.grad_accum
    if micro % dp:
        raise ConfigError(f"train.batch_size={cfg.train.batch_size} / optim.grad_accum="
                          f"{cfg.optim.grad_accum} = {micro} is not divisible by the "
                          f"data-parallel size data*fsdp={dp}")
    model = GPT2(model_cfg)
    ranks = cfg.train.lora_ranks
    # Adapters are decayed whole (the paper's wd 0.05 is on them); they have no kernel names.
    tx = make_optimizer(cfg.optim, cfg.train.num_steps, decay_all=bool(ranks))
    boxed_params = jax.eval_shape(functools.partial(init_params, model, task.seq_len, cfg.seed))
    model_sh = sharding.tree_shardings(boxed_params, mesh)
    abstract_params = abstract_like(nn.unbox(boxed_params), model_sh)
    replicated = NamedSharding(mesh, PartitionSpec())
    if ranks:
        boxed = jax.eval_shape(functools.partial(init_lora_state, tx, abstract_params, cfg))
        param_sh = jax.tree.map(lambda _: replicated, boxed.params)
    else:
        boxed = jax.eval_shape(functools.partial(init_state, model, tx, task.seq_len, cfg.seed))
        param_sh = model_sh
    opt_sh = optax.tree_map_params(
        tx, lambda _, s: s, jax.eval_shape(tx.init, nn.unbox(boxed.params)), param_sh,
        transform_non_params=lambda _: replicated,
        is_leaf=lambda x: isinstance(x, NamedSharding))
    state_sh = TrainState(replicated, param_sh, opt_sh)
    abstract = abstract_like(
        TrainState(boxed.step, nn.unbox(boxed.params), boxed.opt_state), state_sh)
    return Experiment(cfg, task, model, mesh, tx, state_sh, abstract, model_sh, abstract_params)


def init_lora_state(tx: optax.GradientTransformation, abstract_params: Any,
                    cfg: ExperimentConfig) -> TrainState:
    """Step 0 of a LoRA run: adapters (B = 0: the base model exactly) from (seed, lora)."""
    qv, embed = cfg.train.lora_ranks
    try:
        adapters = lora.init_adapters(stream_key(cfg.seed, STREAM_LORA), abstract_params,
                                      qv_rank=qv, embed_rank=embed)
    except ValueError as e:
        raise ConfigError(f"train.lora_rank={qv}: {e}") from None
    return TrainState(jnp.zeros((), jnp.int32), adapters, tx.init(adapters))


def fresh_params(exp: Experiment):
    """The run's initial params (no optimizer state), born sharded: the random-init control."""
    init = lambda: nn.unbox(init_params(exp.model, exp.task.seq_len, exp.cfg.seed))
    return jax.jit(init, out_shardings=exp.param_shardings)()


def fresh_state(exp: Experiment) -> TrainState:
    if exp.cfg.train.lora_ranks:
        init = lambda: init_lora_state(exp.tx, exp.abstract_params, exp.cfg)
    else:
        init = lambda: _unboxed(init_state(exp.model, exp.tx, exp.task.seq_len, exp.cfg.seed))
    return jax.jit(init, out_shardings=exp.state_shardings)()


def _unboxed(state: TrainState) -> TrainState:
    return TrainState(state.step, nn.unbox(state.params), state.opt_state)


def restore_or_init(exp: Experiment, ckpt: Checkpointer | None) -> TrainState:
    """The newest checkpoint that restores (damaged ones are set aside), else step 0."""
    step, state = ckpt.restore_latest(exp.abstract_state) if ckpt is not None else (None, None)
    return fresh_state(exp) if step is None else state
