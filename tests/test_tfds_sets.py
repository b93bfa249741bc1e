"""Frozen evaluation sets (physics_lm/data/tfds): what is built is what the samplers draw, two
builds in two processes are byte-identical, and an eval mode reading a set scores exactly the
problems it would have sampled."""

import json
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from physics_lm.analysis import run_analysis
from physics_lm.config import ConfigError, from_config_dict
from physics_lm.data.cfg.grammar import load_grammar
from physics_lm.data.cfg.sampler import sample_strings
from physics_lm.data.igsm import cells as cells_lib
from physics_lm.data.tfds import read
from physics_lm.data.tfds.cfg_sets import split_keys
from physics_lm.data.tfds.igsm_cells import SCALARS, training_task

ROOT = Path(__file__).resolve().parents[1]
# The cells and size of tests/test_igsm_eval.py: their compiled samplers are in the test cache.
IGSM_SET = "igsm_eval_cells/smoke_pq_n6_s0.op_le_3+op_8"


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file()}


def test_cfg_set_equals_the_sampler_and_rebuilds_byte_identically(tmp_path):
    import tensorflow_datasets as tfds

    name = "cfg_eval_sets/cfg3b_n8_s3"
    read.build(name, tmp_path / "a")
    subprocess.run([sys.executable, "-m", "physics_lm.data.tfds", "build", "--name", name,
                    "--data_dir", str(tmp_path / "b")], cwd=ROOT, check=True)
    a, b = _files(tmp_path / "a"), _files(tmp_path / "b")
    assert any(k.endswith("array_record-00000-of-00001") for k in a)
    assert a == b  # another process: proto maps in another hash order unless sorted
    ds = tfds.data_source(name, data_dir=str(tmp_path / "a"))
    g = load_grammar("cfg3b")
    for split in ("generation", "distribution"):
        s = jax.device_get(sample_strings(split_keys(3, split)[0], g, 8))
        rows = [ds[split][i] for i in range(8)]
        for r, row in enumerate(rows):
            n = int(s.length[r])
            assert row["length"] == n and row["member"] == 1
            np.testing.assert_array_equal(row["tokens"], s.tokens[r, :n])
            np.testing.assert_array_equal(row["nt_ancestor"], s.nt_ancestor[r, :n])
            np.testing.assert_array_equal(row["nt_boundary"], s.nt_boundary[r, :n])
            flips = int((row["corrupted"] != row["tokens"]).sum())
            assert row["n_flipped"] == flips and row["corrupted_member"] in (0, 1)


def test_igsm_set_equals_the_cells_and_eval_reads_it_like_sampling(tmp_path, load_config,
                                                                  igsm_smoke_run):
    data_dir = tmp_path / "tfds"
    b = read.build(IGSM_SET, data_dir)
    assert set(b.info.splits) == {"op_le_3", "op_8"}
    _, splits = read.source(IGSM_SET, data_dir)
    task = training_task("smoke_pq")
    for split, cell in (("op_le_3", "op<=3"), ("op_8", "op=8")):
        batch = jax.device_get(cells_lib.cell_batch(task, 0, cell, 6))
        for r in range(6):
            row = splits[split][r]
            n = min(int(batch.labels["length"][r]), batch.tokens.shape[1])
            np.testing.assert_array_equal(row["tokens"], batch.tokens[r, :n])
            for k in SCALARS:
                want = batch.labels[k][r] if k in batch.labels else -1
                assert row["labels"][k] == want, (cell, r, k)
            assert row["text"]["problem"] and row["text"]["answer"]

    run = tmp_path / "run"
    igsm_smoke_run(run)
    docs = {}
    for source in ("", f"tfds:{IGSM_SET}"):
        c = load_config("igsm", "smoke")
        c.mode = "eval"
        c.train.update(num_steps=4, checkpoint_every=4)
        c.optim.warmup_steps = 1
        c.eval.update(n=6, decode_batch=4, cells=("op<=3",), plots=False, dataset=source,
                      data_dir=str(data_dir))
        run_analysis(from_config_dict(c), run)
        docs[source] = (json.loads((run / "eval" / "igsm.json").read_text()),
                        (run / "eval" / "igsm_generations.jsonl").read_text())
    (sampled, sampled_rows), (frozen, frozen_rows) = docs.values()
    assert frozen["cells"] == sampled["cells"] and frozen_rows == sampled_rows
    assert frozen["eval_config"]["dataset"] == f"tfds:{IGSM_SET}"


def test_dataset_setting_is_validated_at_load(load_config, tmp_path):
    c = load_config("igsm", "smoke")
    for bad, words in (("igsm_eval_cells/med_pq", "expected ''"),
                       ("tfds:cfg_eval_sets/cfg3b", "not read by task.name='igsm'"),
                       ("tfds:igsm_eval_cells/tiny_pq", "base one of"),
                       ("tfds:nope/x", "unknown builder")):
        c.eval.dataset = bad
        with pytest.raises(ConfigError, match=r"eval\.dataset") as e:
            from_config_dict(c)
        assert words in str(e.value), (bad, str(e.value))
    c.eval.update(dataset="tfds:igsm_eval_cells/smoke_pq_n6_s0", data_dir=str(tmp_path))
    cfg = from_config_dict(c)
    with pytest.raises(ConfigError, match="not built"):
        read.igsm_cell("igsm_eval_cells/smoke_pq_n6_s0", str(tmp_path),
                       training_task("smoke_pq"), "op<=3", 6)
    assert cfg.eval.dataset.endswith("smoke_pq_n6_s0")
