"""Config validation: every bad value fails at start-up naming the key and the value."""

from pathlib import Path

import ml_collections
import pytest
from physics_lm.configs import load_module

from physics_lm.config import ConfigError, from_config_dict

CONFIGS = sorted(p for p in (Path(__file__).resolve().parents[1] / "configs").glob("*.py")
                 if p.stem != "__init__" and p.stem != "common")


def _base(**sections) -> dict:
    c = {"task": {"name": "cfg", "grammar": "cfg3b", "seq_len": 64},
         "model": {"num_layers": 2, "num_heads": 2, "d_model": 32, "max_len": 64},
         "optim": {"warmup_steps": 1}, "train": {"batch_size": 8, "num_steps": 4}}
    for k, v in sections.items():
        c[k] = {**c.get(k, {}), **v}
    return c


@pytest.mark.parametrize(
    ("section", "values", "needle"),
    [
        ("model", {"num_heads": 3}, "model.num_heads=3"),
        ("model", {"pos": "alibi"}, "model.pos='alibi'"),
        ("model", {"compute_dtype": "float16"}, "model.compute_dtype='float16'"),
        ("model", {"num_layerz": 2}, "model.num_layerz"),
        ("model", {"d_model": "wide"}, "model.d_model='wide'"),
        ("optim", {"grad_accum": 3}, "optim.grad_accum=3"),
        ("optim", {"schedule": "step"}, "optim.schedule='step'"),
        ("optim", {"warmup_steps": 10}, "optim.warmup_steps=10"),
        ("train", {"batch_size": 0}, "train.batch_size=0"),
        ("mesh", {"data": -1, "fsdp": -1}, "mesh"),
        ("mesh", {"data": 3, "fsdp": 1}, "mesh.data*mesh.fsdp=3"),  # 8 rows on 3 devices
    ],
)
def test_bad_values_name_key_and_value(section, values, needle):
    with pytest.raises(ConfigError) as e:
        from_config_dict(_base(**{section: values}))
    assert needle in str(e.value)
    assert "\n" not in str(e.value)


def test_unknown_top_level_key():
    with pytest.raises(ConfigError, match="unknown config key learning_rate"):
        from_config_dict({**_base(), "learning_rate": 1.0})


@pytest.mark.parametrize(("mode", "tag", "needle"), [
    ("eval", "../x", "tag='../x': must be letters"),
    ("eval", 3, "tag=3: must be letters"),
    ("train", "greedy", "tag='greedy': names an analysis mode's output folder; mode='train'"),
])
def test_bad_tags_are_refused(mode, tag, needle):
    with pytest.raises(ConfigError) as e:
        from_config_dict({**_base(), "mode": mode, "tag": tag})
    assert needle in str(e.value)


def test_runtime_checks_need_task_and_devices():
    from physics_lm.train.setup import build_experiment

    with pytest.raises(ConfigError, match=r"task\.seq_len=64 is longer than model\.max_len=32"):
        build_experiment(from_config_dict(_base(model={"max_len": 32})))
    with pytest.raises(ConfigError, match="cfg9z"):
        build_experiment(from_config_dict(_base(task={"grammar": "cfg9z"})))
    with pytest.raises(ConfigError, match=r"needs 6 devices, found 8"):
        build_experiment(from_config_dict(_base(mesh={"data": 3, "fsdp": 2, "tensor": 1},
                                                train={"batch_size": 12})))
    with pytest.raises(ConfigError, match="not divisible by the data-parallel size"):
        build_experiment(from_config_dict(_base(train={"batch_size": 4})))
    with pytest.raises(ConfigError, match=r"task\.name='tsp'"):
        build_experiment(from_config_dict(_base(task={"name": "tsp"})))


def test_valid_config_freezes():
    cfg = from_config_dict(ml_collections.ConfigDict(_base()))
    with pytest.raises(AttributeError):
        cfg.model.num_layers = 3  # type: ignore[misc]
    assert cfg.model.mlp_dim == 128 and cfg.task.kwargs["grammar"] == "cfg3b"


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_every_config_and_sweep_entry_validates(path):
    from physics_lm.data.registry import build_task
    from physics_lm.train.setup import resolve_model

    def check(cd) -> None:
        cfg = from_config_dict(cd)
        resolve_model(cfg.model, build_task(cfg.task))  # task kwargs and task/model fit

    module = load_module(path)
    args = getattr(module, "TEST_ARGS", (None,))
    for arg in args:
        check(module.get_config(arg))
        entries: list[dict] = []
        if hasattr(module, "sweep"):
            module.sweep(lambda entries=entries, **kw: entries.append(kw))
        for entry in entries:
            c = module.get_config(arg)
            c.unlock()
            for dotted, value in entry.items():
                node = c
                *parents, leaf = dotted.removeprefix("config.").split(".")
                for p in parents:
                    node = node[p]
                assert leaf in node, f"sweep key {dotted} is not in {path.name}"
                node[leaf] = value
            check(c)
