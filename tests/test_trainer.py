"""The training loop: sharding invariance, accumulation, exact resume, refusal, failure modes."""

import json
import os
import re
import shutil
import signal
import threading
import time
from pathlib import Path

import jax
import numpy as np
import pytest

from physics_lm.config import from_config_dict
from physics_lm.train.memory import DoesNotFitError
from physics_lm.train.setup import build_experiment, fresh_state
from physics_lm.train.trainer import NonFiniteLossError, jit_steps, train_and_evaluate


def _cfg(**sections):
    c = {
        "seed": 3,
        "task": {"name": "cfg", "grammar": "cfg3b", "seq_len": 32},
        "model": {"num_layers": 2, "num_heads": 4, "d_model": 32, "max_len": 32, "pos": "rotary"},
        "optim": {"warmup_steps": 2, "lr": 3e-3},
        "train": {
            "batch_size": 8,
            "num_steps": 6,
            "log_every": 1,
            "eval_every": 100,
            "eval_batches": 1,
            "checkpoint_every": 2,
        },
    }
    for k, v in sections.items():
        c[k] = {**c.get(k, {}), **v}
    return from_config_dict(c)


def _losses(cfg, devices, steps=3):
    exp = build_experiment(cfg, devices)
    state = fresh_state(exp)
    train, _ = jit_steps(exp)
    out = []
    with jax.set_mesh(exp.mesh):
        for _ in range(steps):
            state, m = train(state)
            out.append(float(m["loss"]))
    return np.array(out), state


def test_sharded_losses_match_single_device():
    assert jax.device_count() == 8, "conftest must give 8 fake devices"
    one = _cfg(mesh={"data": 1, "fsdp": 1, "tensor": 1})
    ref, _ = _losses(one, jax.devices()[:1], steps=2)
    assert len(set(ref.tolist())) == len(ref)  # fresh data each step: not comparing constants
    for data, fsdp, tensor in [(8, 1, 1), (2, 2, 2), (2, 1, 4), (1, 8, 1)]:
        cfg = _cfg(mesh={"data": data, "fsdp": fsdp, "tensor": tensor})
        got, state = _losses(cfg, jax.devices(), steps=2)
        np.testing.assert_allclose(got, ref, rtol=2e-5, err_msg=f"mesh {(data, fsdp, tensor)}")
        if fsdp * tensor > 1:  # parameters really are split across devices
            kernel = state.params["blocks_0"]["fc"]["kernel"]
            assert len({str(s.index) for s in kernel.addressable_shards}) > 1


def test_grad_accumulation_matches_full_batch():
    mesh = {"data": 2, "fsdp": 1, "tensor": 1}
    full, s1 = _losses(_cfg(mesh=mesh), jax.devices()[:2], steps=2)
    acc, s2 = _losses(_cfg(mesh=mesh, optim={"grad_accum": 2}), jax.devices()[:2], steps=2)
    np.testing.assert_allclose(acc, full, rtol=2e-5)
    for a, b in zip(jax.tree.leaves(s1.params), jax.tree.leaves(s2.params), strict=True):
        np.testing.assert_allclose(a, b, atol=2e-5)


def _step_losses(workdir: Path) -> dict[int, float]:
    rows = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["loss"] for r in rows if "loss" in r}


def test_resume_reproduces_uninterrupted_run(tmp_path):
    cfg = _cfg()
    straight = train_and_evaluate(cfg, tmp_path / "a")
    assert straight["step"] == 6
    stopped = train_and_evaluate(cfg, tmp_path / "b", stop_at_step=3)
    assert stopped["step"] == 3
    assert (tmp_path / "b" / "checkpoints" / "3").is_dir()
    train_and_evaluate(cfg, tmp_path / "b")  # relaunch: resumes at 3
    a, b = _step_losses(tmp_path / "a"), _step_losses(tmp_path / "b")
    assert sorted(b) == list(range(1, 7))
    assert [a[s] for s in range(1, 7)] == [b[s] for s in range(1, 7)]  # bitwise equal
    assert a[6] < a[1]


def test_relaunch_after_a_crash_logs_each_step_once(tmp_path):
    cfg = _cfg()
    train_and_evaluate(cfg, tmp_path)
    before = _step_losses(tmp_path)
    for step in (4, 6):  # as if killed -9 after step 6 but before checkpoints 4 and 6 landed
        shutil.rmtree(tmp_path / "checkpoints" / str(step))
    with (tmp_path / "metrics.jsonl").open("a") as f:
        f.write('{"step": 7, "lo')  # a line cut by the crash
    train_and_evaluate(cfg, tmp_path)  # resumes at 2, replays 3..6
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    for key in ("loss", "eval_loss"):  # train and eval rows: each step once, in order
        steps = [r["step"] for r in rows if key in r]
        assert steps == sorted(set(steps)), (key, steps)
    assert _step_losses(tmp_path) == before  # the replay is bit-exact


def test_undefined_metrics_are_logged_as_strict_json_null(tmp_path):
    """A mean over no samples (e.g. repairs of zero valid completions) is NaN; jq and other
    strict JSON readers reject a bare NaN, so metrics.jsonl holds null and TensorBoard skips it."""
    from physics_lm.train.metrics import MetricsWriter

    writer = MetricsWriter(tmp_path)
    writer.write(5, {"eval/robustness/T1/repairs_mean": float("nan"), "loss": 0.5,
                     "eval/x": float("inf")})
    writer.close()

    def refuse(name):
        raise AssertionError(f"non-strict JSON constant {name}")

    row = json.loads((tmp_path / "metrics.jsonl").read_text(), parse_constant=refuse)
    assert row == {"step": 5, "eval/robustness/T1/repairs_mean": None, "loss": 0.5,
                   "eval/x": None}


def test_metric_names_become_tensorboard_tags_without_a_log_line_each(tmp_path, caplog):
    """iGSM eval metrics carry cell names (`seen:op<=4`); tensorboardX would rename each and log
    one INFO line per scalar at every eval."""
    pytest.importorskip("tensorboardX")
    from physics_lm.train.metrics import MetricsWriter, tensorboard_tag

    assert tensorboard_tag("eval/cells/seen:op<=4/accuracy") == "eval/cells/seen_op__4/accuracy"
    assert tensorboard_tag("/loss") == "loss" and tensorboard_tag("eval/a-b.c_1") == "eval/a-b.c_1"
    writer = MetricsWriter(tmp_path)
    with caplog.at_level("INFO"):
        writer.write(3, {"eval/cells/seen:op<=4/accuracy": 0.5, "eval/cells/op=9/accuracy": 0.25})
    writer.close()
    assert "is illegal" not in caplog.text
    row = json.loads((tmp_path / "metrics.jsonl").read_text())  # the JSON keeps the real names
    assert row["eval/cells/seen:op<=4/accuracy"] == 0.5
    events = b"".join(p.read_bytes() for p in (tmp_path / "tb").iterdir())
    assert b"eval/cells/seen_op__4/accuracy" in events and b"eval/cells/op_9/accuracy" in events


def test_relaunch_with_different_config_is_refused(tmp_path):
    train_and_evaluate(_cfg(train={"num_steps": 2}), tmp_path)
    with pytest.raises(ValueError, match=r"different config.*optim.lr"):
        train_and_evaluate(_cfg(train={"num_steps": 2}, optim={"lr": 1e-3}), tmp_path)
    # Changing only how often we log is allowed.
    train_and_evaluate(_cfg(train={"num_steps": 2, "log_every": 2}), tmp_path)


def test_non_finite_loss_stops_naming_the_step(tmp_path):
    cfg = _cfg(optim={"lr": 1e30, "warmup_steps": 0, "grad_clip": 0.0})
    with pytest.raises(NonFiniteLossError, match=r"non-finite loss .* at step \d+"):
        train_and_evaluate(cfg, tmp_path)


def test_sigterm_saves_and_exits_then_resumes(tmp_path):
    cfg = _cfg(train={"num_steps": 400, "checkpoint_every": 1000, "log_every": 1})
    metrics = tmp_path / "metrics.jsonl"

    def kill_when_training() -> None:
        deadline = time.time() + 120
        while time.time() < deadline:
            if metrics.exists() and len(metrics.read_text().splitlines()) >= 2:
                os.kill(os.getpid(), signal.SIGTERM)
                return
            time.sleep(0.05)

    threading.Thread(target=kill_when_training, daemon=True).start()
    out = train_and_evaluate(cfg, tmp_path)
    assert 2 <= out["step"] < 400
    saved = sorted(int(p.name) for p in (tmp_path / "checkpoints").iterdir() if p.name.isdigit())
    assert saved == [out["step"]]


def test_step_that_cannot_fit_stops_before_the_first_step(tmp_path):
    # 8 devices x 4 rows: 1.5 MB per device at grad_accum=1 by the compiled analysis (CPU),
    # 1.0 MB at 2. A 1.1 MB "device" stops the run at once with one line naming the need, the
    # limit and a grad_accum that fits; that grad_accum then trains.
    limit = {"batch_size": 32, "num_steps": 2, "device_memory_bytes": 1_100_000}
    with pytest.raises(DoesNotFitError) as e:
        train_and_evaluate(_cfg(train=limit), tmp_path / "a")
    msg = str(e.value)
    assert "\n" not in msg
    found = re.search(r"needs \d\.\d MB .* per device .* but the device has 1\.1 MB; "
                      r"optim\.grad_accum=(\d+) needs", msg)
    assert found, msg
    assert not (tmp_path / "a" / "metrics.jsonl").exists()  # no step ran
    fits = _cfg(optim={"grad_accum": int(found.group(1))}, train=limit)
    assert train_and_evaluate(fits, tmp_path / "b")["step"] == 2


def test_a_config_key_added_later_counts_as_its_default(tmp_path):
    """A run written before a key existed resumes while the key keeps its default."""
    from physics_lm.config import ConfigError
    from physics_lm.train.trainer import check_workdir_config

    cfg = _cfg()
    doc = json.loads(cfg.to_json())
    del doc["train"]["init_from"]  # as written by an older version
    (tmp_path / "config.json").write_text(json.dumps(doc))
    check_workdir_config(cfg, tmp_path, write=False)
    changed = _cfg(train={"init_from": "/elsewhere"})
    with pytest.raises(ConfigError, match=r"train\.init_from.*pass the training flags again"):
        check_workdir_config(changed, tmp_path, write=False)
