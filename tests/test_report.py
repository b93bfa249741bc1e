"""`python -m physics_lm.report`: the papers' tables from a sweep of smoke workdirs, one of them
with real mode output (eval/igsm.json of mode=eval), the others written in the modes' shapes;
absent runs, files and keys are gaps, never errors."""

import copy
import json

from helpers import tiny_cfg_run

from physics_lm.analysis import run_analysis
from physics_lm.config import from_config_dict
from physics_lm.report import curves
from physics_lm.report.__main__ import main, write_report
from physics_lm.report.runs import find_runs


def _igsm_config(load_config, mode="train", **train):
    c = load_config("igsm", "smoke")
    c.mode = mode
    c.train.update(num_steps=4, checkpoint_every=4, **train)
    c.optim.warmup_steps = 1
    c.eval.update(n=6, decode_batch=4, cells=("op<=3",), plots=False)
    return c


def _write(path, doc):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc))


def test_report_tables_from_a_smoke_sweep(tmp_path, load_config, igsm_smoke_run):
    root = tmp_path / "sweep"
    real = root / "igsm" / "d2"
    igsm_smoke_run(real)
    run_analysis(from_config_dict(_igsm_config(load_config, "eval")), real)
    doc = json.loads((real / "eval" / "igsm.json").read_text())
    acc = doc["cells"]["op<=3"]["accuracy"]

    # Part 2.2 runs: retry data at two rates (their eval docs: the real one, other numbers)
    for rate, mask, a in ((0.1, "none", 0.25), (0.5, "mistake", 0.75)):
        c = _igsm_config(load_config)
        c.task.update(retry="retry", retry_rate=rate, retry_mask=mask)
        d = root / "retry" / f"r{rate}_{mask}"
        _write(d / "config.json", json.loads(from_config_dict(c).to_json()))
        e = copy.deepcopy(doc)
        e["cells"]["op<=3"].update(accuracy=a, back_mean=2.5)
        _write(d / "eval" / "igsm.json", e)
    lora = _igsm_config(load_config, init_from=str(real), lora_rank=4)
    _write(root / "lora4" / "config.json", json.loads(from_config_dict(lora).to_json()))
    _write(root / "lora4" / "eval" / "igsm.json", doc)
    probe = {"results": {t: {"id": {"trained": {"acc": 0.9}, "control": {"acc": 0.3}}}
                         for t in ("nece", "dep")}}
    _write(real / "probe" / "igsm.json", probe)
    # Part 1: a tiny cfg run with eval and probe docs in the modes' shapes, and one with none
    cfg_run = root / "cfg" / "rotary"
    _write(cfg_run / "config.json", json.loads(tiny_cfg_run().to_json()))
    _write(cfg_run / "eval" / "cfg.json", {"generation": {"cut0": {"T1": {"accuracy": 0.875}}},
                                           "distribution": {"kl": 0.0123}})
    entry = {"trained": {"acc": 0.8, "acc_boundary": 0.95},
             "control": {"acc": 0.2, "acc_boundary": 0.4}}
    _write(cfg_run / "probe" / "cfg.json", {
        "layers": ["blocks.0.resid_post", "blocks.1.resid_post"], "levels": [1, 2],
        "results": {"multi": {"blocks.1.resid_post": {f"level{l}": {"ancestor": entry}
                                                      for l in (1, 2)}}}})
    _write(root / "cfg" / "absolute" / "config.json",
           json.loads(tiny_cfg_run(model={"num_layers": 2, "num_heads": 2, "d_model": 32,
                                          "max_len": 64, "pos": "absolute"}).to_json()))
    (root / "cfg" / "absolute" / "eval").mkdir()
    (root / "cfg" / "absolute" / "eval" / "cfg.json").write_text("{truncated")

    assert main(["--root", str(root)]) == 0
    text = (root / "report.md").read_text()
    assert "6 runs" in text
    assert f"| igsm/d2 | custom_pq | 2x64 | greedy | {acc:.3f} |" in text  # real mode output
    assert "| cfg3b | — / — | 0.875 / 0.0123 |" in text  # absolute: a broken file is a gap
    assert "| cfg/rotary | cfg3b | rotary | multi | 0.950 (ctl 0.400) | 0.950 (ctl 0.400) |" in text
    assert "0.900 (ctl 0.300)" in text and "| igsm/d2 | 2x64 |" in text
    assert "| retry/r0.5_mistake | retry | 0.5 | mistake | 0.750 |" in text
    assert "| retry/r0.1_none | retry | 0.1 | none | 2.50 |" in text  # BACK counts
    assert "| lora4 | qv 4 / e 8 | none |" in text
    assert "| igsm/d2 | — | — | — | — | — |" in text  # no regret/igsm.json yet: a gap
    assert (root / "report_igsm_cells.png").stat().st_size > 0
    assert (root / "report_retry_rate.png").stat().st_size > 0


def test_report_of_an_empty_root_is_all_gaps(tmp_path):
    out = write_report(tmp_path, tmp_path / "r" / "report.md")
    assert "0 runs" in out.read_text() and "_no runs with these results" in out.read_text()
    assert main(["--root", str(tmp_path / "nope")]) == 2


def _cfg_run(work, metrics, checkpoints=(), **train):
    """A cfg workdir: config.json (batch 8 x 64 tokens), metrics.jsonl lines, checkpoint dirs."""
    cfg = json.loads(tiny_cfg_run().to_json())
    cfg["train"].update(train)
    _write(work / "config.json", cfg)
    (work / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in metrics)
                                        + '{"step": 9, "eval_lo')  # a line being written
    for step in checkpoints:
        (work / "checkpoints" / str(step)).mkdir(parents=True)


def _analysis(step, acc, kl, t="T1"):
    return {"step": step, f"eval/generation/cut0/{t}/accuracy": acc,
            f"eval/generation/cut0/{t}/n": 64.0, "eval/distribution/kl": kl}


def test_learning_curves_follow_init_from_forks(tmp_path):
    """A fork's tokens continue its source's (the latest checkpoint, or :STEP); the T = 1 accuracy
    is preferred over other temperatures; a missing source is named, not an error."""
    root, outside = tmp_path / "sweep", tmp_path / "elsewhere"
    base = outside / "base"  # the source is not under the report's root
    _cfg_run(base, [{"step": 5, "loss": 1.0}, {"step": 10, "eval_loss": 0.5},
                    _analysis(10, 0.1, 0.02), _analysis(20, 0.3, 0.01)], checkpoints=(10, 20))
    _cfg_run(root / "ext", [{"step": 10, "eval_loss": 0.45},
                            {**_analysis(10, 0.9, 0.001, "T0.1"), **_analysis(10, 0.5, 0.005)}],
             init_from=str(base))
    _cfg_run(root / "ext_at10", [_analysis(10, 0.4, 0.008)], init_from=f"{base}:10")
    _cfg_run(root / "cont_at10", [_analysis(12, 0.4, 0.008)], init_from=f"{base}:10",
             init_from_state=True)  # its step 12 is the 2nd after the fork
    _cfg_run(root / "ext_of_ext", [_analysis(10, 0.6, 0.004)], init_from=str(root / "ext"))
    _cfg_run(root / "orphan", [_analysis(10, 0.2, 0.03)], init_from=str(tmp_path / "gone"))
    per_step = 8 * 64
    by = {r.name: curves.curve(r) for r in find_runs(root)}
    ext = by["ext"]
    assert [(p.step, p.tokens, p.eval_loss, p.cut0, p.kl, p.n) for p in ext.points] == [
        (10, 30 * per_step, 0.45, 0.5, 0.005, 64)]
    assert [(n, [p.step for p in pts]) for n, pts in ext.sources] == [("base", [10, 20])]
    assert by["ext_at10"].points[0].tokens == 20 * per_step
    assert by["cont_at10"].points[0].tokens == 12 * per_step
    chain = by["ext_of_ext"]  # ext has no checkpoints yet: its step is unknown
    assert not chain.chain_found and chain.points[0].tokens == 10 * per_step
    assert not by["orphan"].chain_found
    (root / "ext" / "checkpoints" / "10").mkdir(parents=True)
    chain = curves.curve(next(r for r in find_runs(root) if r.name == "ext_of_ext"))
    assert chain.chain_found and chain.points[0].tokens == (20 + 10 + 10) * per_step
    assert [n for n, _ in chain.sources] == ["base", "ext"]

    out = write_report(root)
    text = out.read_text()
    assert f"| ext (from base) | 10 | {30 * per_step / 1e6:.1f} | 0.450 | 0.0050 | 0.500 |" in text
    assert f"orphan (from {tmp_path / 'gone'}: not found, tokens from the fork)" in text
    assert (root / "report_learning_curve.png").stat().st_size > 0


def test_igsm_learning_curve_per_cell(tmp_path, load_config):
    """Accuracy per eval cell and held-out loss against tokens, one column per cell (its n in
    the header); a cell a point did not measure is a gap."""
    work = tmp_path / "sweep" / "tiny"
    c = load_config("igsm", "smoke")
    _write(work / "config.json", json.loads(c.to_json()))
    per_step = c.train.batch_size * c.task.seq_len
    cell = lambda name, acc, n=32: {f"eval/cells/{name}/accuracy": acc,
                                    f"eval/cells/{name}/n": float(n),
                                    f"eval/cells/{name}/error_kinds/wrong_value": 3.0}
    (work / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in [
        {"step": 5, "loss": 2.0}, {"step": 10, "eval_loss": 0.9},
        {"step": 10, **cell("op<=3", 0.0), **cell("seen:op<=3", 0.25)},
        {"step": 20, **cell("seen:op<=3", 0.5)}]))
    (pts,) = [curves.curve(r).points for r in find_runs(tmp_path / "sweep")]
    assert [(p.step, p.tokens, p.eval_loss, p.cells) for p in pts] == [
        (10, 10 * per_step, 0.9, {"op<=3": (0.0, 32), "seen:op<=3": (0.25, 32)}),
        (20, 20 * per_step, None, {"seen:op<=3": (0.5, 32)})]
    text = write_report(tmp_path / "sweep").read_text()
    assert "| run | step | tokens (M) | held-out loss | op<=3 (n=32) | seen:op<=3 (n=32) |" in text
    assert f"| tiny | 20 | {20 * per_step / 1e6:.1f} | — | — | 0.500 |" in text
    assert (tmp_path / "sweep" / "report_igsm_learning_curve.png").stat().st_size > 0
