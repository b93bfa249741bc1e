"""Will it fit? Compiles the real train step for a TPU topology on this machine, before paying.

  python -m physics_lm.launch.aot --config=configs/igsm_depth20.py --topology=v5p-32 \
      [--config.train.batch_size=256 ...] [--mfu=0.4] [--json=OUT.json]

The step is the trainer's own (`trainer.jit_steps`: sampler inside, donated state, explicit
shardings) on the config's mesh over the topology's devices, lowered against the abstract state
and compiled by XLA:TPU (the `tpu` extra: libtpu as a pip package, no TPU needed), or by XLA:CPU
for `--topology=cpu-N`. It prints per-device memory against the chip's HBM, FLOPs per step (the
compiled program's and the model's 6N + attention), tokens/s and step time at a stated MFU, and
the data-parallel `task.groups` to set. Exit 0: fits; 3: does not fit (one line on stderr: what
it needs, what the chip has, what to change); 2: a bad flag, config or topology.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import sys
import time
from pathlib import Path
from typing import Any

from absl import app, flags
from physics_lm.launch import topology

from physics_lm import main as cli  # defines --config (and --workdir, unused here)
from physics_lm.train.memory import fmt_bytes

_TOPOLOGY = flags.DEFINE_string("topology", None, "v5p-32, v4-8, v5e-256, v5e:2x2, cpu-8, ...")
_MFU = flags.DEFINE_float("mfu", 0.4, "Model FLOPs utilisation assumed for step time and tokens/s.")
_JSON = flags.DEFINE_string("json", None, "Also write the numbers to this JSON file.")

EXIT_DOES_NOT_FIT = 3


class TargetDoesNotFitError(Exception):
    """The step cannot fit the target; the message is the one line to print."""


def _fail(message: str, code: int) -> None:
    print(f"{'does not fit' if code == EXIT_DOES_NOT_FIT else 'error'}: {message}",
          file=sys.stderr)
    sys.exit(code)


def state_bytes_per_device(exp: Any) -> int:
    """Bytes of the train state (and a LoRA base) on one device, from the abstract shardings."""
    import jax
    import numpy as np

    leaves = jax.tree.leaves((exp.abstract_state, *exp.frozen_abstract))
    return int(sum(np.prod(x.sharding.shard_shape(x.shape)) * x.dtype.itemsize for x in leaves))


def _hints(cfg: Any, n: int, dp: int, state: int, limit: int) -> list[str]:
    """What to change: shard a state that crowds the chip (fsdp keeps the data-parallel size),
    remat, more chips, a smaller batch."""
    out = []
    if limit and state > limit // 2:
        fsdp = next((k for k in range(2, n + 1) if n % k == 0 and state / k <= limit / 2), None)
        why = f"(the train state alone is {fmt_bytes(state)} per device)"
        out.append(f"--config.mesh.fsdp={fsdp} --config.mesh.data=-1 {why}" if fsdp else
                   f"more chips {why}")
    if not cfg.model.remat:
        out.append("model.remat=True (keeps only each block's input for the backward pass)")
    out.append(f"a topology with more chips (data-parallel size now {dp})")
    out.append(f"a smaller train.batch_size (now {cfg.train.batch_size})")
    return out


def _compiler_oom(e: Exception) -> str | None:
    """The XLA:TPU compiler's own out-of-memory verdict (one sentence), if that is the error."""
    text = str(e)
    if "RESOURCE_EXHAUSTED" not in text and "Ran out of memory" not in text:
        return None
    line = text.split("RESOURCE_EXHAUSTED:", 1)[-1].strip().splitlines()[0]
    return line[:300].rstrip(".")


def analyse(cfg: Any, target: topology.Target, mfu: float) -> dict[str, Any]:
    """Compiles the train step for `target`; one-line `TargetDoesNotFitError` if it cannot fit.

    Two verdicts: XLA:TPU refuses to compile a program larger than the chip's HBM (less what
    its runtime keeps), and the trainer's own check compares the compiled analysis with the
    HBM of the table (or `train.device_memory_bytes`) and computes the grad_accum that fits.
    """
    import jax

    from physics_lm.models import attention
    from physics_lm.train import memory, metrics, sharding
    from physics_lm.train.setup import build_experiment
    from physics_lm.train.trainer import check_step_memory, jit_steps

    override = cfg.train.device_memory_bytes
    limit = override or (target.chip.hbm_bytes if target.chip else 0)
    # The trainer's check reads the limit from the config where the device reports none.
    cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, device_memory_bytes=limit))
    exp = build_experiment(cfg, target.devices)
    dp, batch = sharding.data_parallel_size(exp.mesh), cfg.train.batch_size
    state = state_bytes_per_device(exp)
    hints = _hints(cfg, exp.mesh.size, dp, state, limit)
    t = time.perf_counter()
    with jax.set_mesh(exp.mesh):
        try:
            compiled = jit_steps(exp)[0].lower(exp.abstract_state, *exp.frozen_abstract).compile()
            compile_s = time.perf_counter() - t
            # Not fitting, it compiles again at a larger grad_accum to say which one would fit.
            mem = check_step_memory(exp, compiled) if limit else memory.step_memory(compiled)
        except memory.DoesNotFitError as e:
            raise TargetDoesNotFitError(f"{target.name}: {e}; or " + ", or ".join(hints)) from None
        except jax.errors.JaxRuntimeError as e:
            oom = _compiler_oom(e)
            if oom is None:
                raise
            if batch // (cfg.optim.grad_accum * dp) > 1:  # fewer rows per device at a time
                grad_accum = f"optim.grad_accum={2 * cfg.optim.grad_accum}"
                hints.insert(int(state > limit // 2), grad_accum)
            raise TargetDoesNotFitError(
                f"the XLA:TPU compiler ran out of HBM for the train step on {target.name} "
                f"({oom}); try " + ", or ".join(hints)) from None
    cost = compiled.cost_analysis() or {}
    cost = cost[0] if isinstance(cost, list) else cost
    n = exp.mesh.size
    seq_len = exp.task.seq_len
    tokens = batch * seq_len
    model_flops = metrics.train_flops_per_token(exp.model.cfg, seq_len) * tokens
    peak = cfg.train.peak_flops_per_device or (target.chip.peak_bf16_flops if target.chip else 0)
    step_s = model_flops / (n * peak * mfu) if peak else None
    groups = getattr(exp.task, "groups", None)
    return {
        "topology": target.name, "description": target.description, "devices": n,
        "compiler": "XLA:TPU" if target.chip else "XLA:CPU",
        "mesh": dict(exp.mesh.shape), "data_parallel": dp, "batch_size": batch,
        "attention": cfg.model.attention,
        "fused_attention_calls": attention.kernel_calls(compiled.as_text()),
        "seq_len": seq_len, "grad_accum": cfg.optim.grad_accum, "remat": cfg.model.remat,
        "params": metrics.count_params(exp.abstract_state.params),
        "rows_per_device": batch // (cfg.optim.grad_accum * dp), "compile_s": compile_s,
        "memory": dataclasses.asdict(mem) | {"peak": mem.peak} if mem else None,
        "state_bytes": state,
        "code_bytes": int(getattr(compiled.memory_analysis(), "generated_code_size_in_bytes", 0)),
        "hbm_bytes": limit or None,
        "hbm_source": "train.device_memory_bytes" if override else (
            f"{target.chip.generation} HBM, {target.chip.source}" if target.chip else None),
        "peak_flops_per_device": peak or None,
        # XLA's cost analysis counts a loop body once: with grad_accum = g the scan over
        # micro-batches is one micro-batch's forward and backward, hence x g per step (the
        # optimizer update, outside the loop, is then overcounted: a negligible share).
        "compiled_flops": float(cost.get("flops", 0.0)) * n,
        "compiled_flops_per_step": float(cost.get("flops", 0.0)) * n * cfg.optim.grad_accum,
        "model_flops": model_flops,
        "mfu": mfu, "step_time_s": step_s, "tokens_per_s": tokens / step_s if step_s else None,
        "num_steps": cfg.train.num_steps,
        "task_groups": groups, "groups_to_set": (
            None if groups is None else (groups if groups % dp == 0 else dp)),
    }


def _attention_line(r: dict[str, Any]) -> str:
    want, calls = r["attention"], r["fused_attention_calls"]
    if want == "xla":
        return f"attention: xla ({calls} fused kernel calls in the compiled step)"
    if calls:
        return f"attention: {want}, lowered: {calls} kernel calls in the compiled step"
    return (f"attention: {want} requested, but the compiled step holds no kernel call: it fell "
            "back to XLA (the warning above says why)")


def _gb(n: float | None) -> str:
    return "      n/a" if n is None else f"{fmt_bytes(n):>9}"


def report(r: dict[str, Any], config: str) -> str:
    """The table a user reads before paying for the topology."""
    m = r["memory"]
    lines = [f"AOT fit check of {config} on {r['description']}",
             f"  {r['compiler']} compiled the real train step in {r['compile_s']:.0f} s; mesh "
             f"{r['mesh']} (data-parallel {r['data_parallel']}), {r['params']:,} params, "
             f"batch {r['batch_size']} x T {r['seq_len']}, grad_accum {r['grad_accum']} "
             f"({r['rows_per_device']} per device per micro-batch), remat "
             f"{'on' if r['remat'] else 'off'}",
             _attention_line(r),
             "memory per device (the compiled program's own analysis):"]
    if m:
        hbm = r["hbm_bytes"]
        share = f" = {m['peak'] / hbm:.0%} of {hbm / 2**30:.1f} GiB HBM" if hbm else ""
        lines += [f"  arguments   {_gb(m['argument'])}  (the train state: params + optimizer)",
                  f"  outputs     {_gb(m['output'])}",
                  f"  temporaries {_gb(m['temp'])}",
                  f"  aliased     {_gb(-m['alias'])}  (the donated state's buffers, reused)",
                  f"  peak        {_gb(m['peak'])}{share}"
                  + (f" ({r['hbm_source']})" if hbm else " (no HBM figure: no check)"),
                  f"  code        {_gb(r['code_bytes'])}  (the program itself, also in HBM: "
                  f"peak + code = {_gb(m['peak'] + r['code_bytes']).strip()})"]
    flops = r["compiled_flops_per_step"]
    ratio = f" (compiled / model = {flops / r['model_flops']:.2f})" if r["model_flops"] else ""
    per_loop = (f" = {r['compiled_flops']:.3e} as XLA counts it x grad_accum {r['grad_accum']} "
                "(a loop body counts once)" if r["grad_accum"] > 1 else "")
    lines += ["FLOPs per step (all devices):",
              f"  compiled program {flops:10.3e}{per_loop}; XLA's cost analysis of the whole "
              "step: remat recompute, the sampler, the optimizer",
              f"  model 6N + attn  {r['model_flops']:10.3e}{ratio}"]
    if r["step_time_s"]:
        total_h = r["step_time_s"] * r["num_steps"] / 3600
        lines += [f"at {r['mfu']:.0%} MFU (--mfu; model FLOPs over {r['devices']} x "
                  f"{r['peak_flops_per_device'] / 1e12:.0f} TFLOP/s bf16 peak):",
                  f"  step {r['step_time_s']:.3f} s, {r['tokens_per_s']:,.0f} tokens/s, "
                  f"{r['num_steps']:,} steps in {total_h:.1f} h"]
    if r["groups_to_set"] is not None:
        same = r["groups_to_set"] == r["task_groups"]
        lines.append(f"task.groups: {r['task_groups']}" + (
            " (a multiple of the data-parallel size: each device samples its own rows)" if same
            else f" -> set --config.task.groups={r['groups_to_set']} (= data x fsdp) so each "
                 "device samples only its own rows (this check compiled the config as given)"))
    if not (m and r["hbm_bytes"]):
        lines.append("verdict: compiled (no HBM figure to compare with)")
    else:
        tight = m["peak"] > 0.9 * r["hbm_bytes"]
        lines.append("verdict: fits" + (" (XLA:TPU compiled it within the chip's HBM)"
                                         if r["compiler"] == "XLA:TPU" else "")
                     + (": less than 10% headroom, the runtime and fragmentation need some"
                        if tight else ""))
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    del argv
    from physics_lm.config import ConfigError, from_config_dict

    config_dict = flags.FLAGS["config"].value
    if config_dict is None or not _TOPOLOGY.value:
        _fail("--config and --topology are required", 2)
    if not 0 < _MFU.value <= 1:
        _fail(f"--mfu={_MFU.value}: must be in (0, 1]", 2)
    try:
        cfg = from_config_dict(config_dict)
        target = topology.resolve(_TOPOLOGY.value)
        result = analyse(cfg, target, _MFU.value)
    except (ConfigError, topology.TopologyError) as e:
        _fail(str(e), 2)
    except TargetDoesNotFitError as e:
        _fail(str(e), EXIT_DOES_NOT_FIT)
    config = next((a.split("=", 1)[1] for a in sys.argv if a.startswith("--config=")), "config")
    print(report(result, config), flush=True)
    if _JSON.value:
        Path(_JSON.value).write_text(json.dumps({"config": config, **result}, indent=2))
    return 0


def _prepare_jax(argv: list[str]) -> None:
    """Before JAX starts a backend: its own backend is the CPU (compile-only TPU devices need no
    TPU, and a TPU VM's chips stay free), with N devices for `cpu-N`; libtpu gets the target's
    accelerator type and a worker list so it does not log errors looking for a TPU."""
    import jax

    jax.config.update("jax_platforms", "cpu")
    name = next((a.split("=", 1)[1] for a in argv if a.startswith("--topology=")), "")
    if m := re.fullmatch(r"cpu-(\d+)", name):
        jax.config.update("jax_num_cpu_devices", int(m.group(1)))
    elif name:
        # Compile-only: no chip to guard, so another process (a second check, a test) may
        # hold libtpu's lockfile at the same time.
        os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
        try:
            os.environ.setdefault("TPU_ACCELERATOR_TYPE",
                                  topology.accelerator_type(*topology.parse(name)))
            os.environ.setdefault("TPU_WORKER_HOSTNAMES", "localhost")
        except topology.TopologyError:
            pass  # reported by main()


def entry() -> None:
    _prepare_jax(sys.argv)
    app.run(lambda argv: sys.exit(main(argv)), flags_parser=cli.parse_flags)


if __name__ == "__main__":
    entry()
