"""Judge throughput (solutions/s on one core) against the official ``true_correct``.

Usage: python benchmarks/igsm_judge.py [--reference DIR] [--seconds 3] [--json OUT]

The peer numbers are the official evaluator's rates measured on this machine class (SPEC §21:
13,700/s med, 9,500/s hard, 11,100/s on a mixed evaluator set), with the problem object already
built, as here for the ``judge`` rows. We time CPU seconds of this process (the shared machine's
load does not count against us); wall-clock rates are printed beside them.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

from physics_lm.data.igsm.text.judge import judge_problem
from physics_lm.data.igsm.text.parser import parse_problem

_REPO = Path(__file__).resolve().parents[1]
PEER = {"med": 13_700, "hard": 9_500, "mixed": 11_100}


def _mutate(solution: str, rng: random.Random) -> str:
    """A wrong solution: one sentence's result off by one, or one sentence dropped."""
    sents = solution[:-1].split(". ")
    i = rng.randrange(len(sents))
    if rng.random() < 0.5 and len(sents) > 1:
        del sents[i]
    else:
        head, _, old = sents[i].rpartition(" = ")
        sents[i] = f"{head} = {(int(old) + 1) % 23}"
    return ". ".join(sents) + "."


def _rate(fn, n_items: int, seconds: float) -> tuple[float, float]:
    cpu0, wall0, n = time.process_time(), time.perf_counter(), 0
    while time.process_time() - cpu0 < seconds:
        fn()
        n += n_items
    return n / (time.process_time() - cpu0), n / (time.perf_counter() - wall0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reference", type=Path, default=_REPO.parent / "shared/reference/igsm")
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--json", type=Path, default=None, help="also write the table as JSON")
    args = ap.parse_args()
    data = {}
    for level in ("med", "hard"):
        with (args.reference / f"{level}_pq_public.jsonl").open(encoding="utf-8") as f:
            data[level] = [json.loads(line) for line in f]
    rng = random.Random(0)
    mixed = [
        {**r, "solution": _mutate(r["solution"], rng) if rng.random() < 0.5 else r["solution"]}
        for r in data["med"]
    ]
    data["mixed"] = mixed
    rows = []
    for name, recs in data.items():
        problems = [parse_problem(r["problem"]) for r in recs]
        pairs = list(zip(problems, [r["solution"] for r in recs], strict=True))
        cpu, wall = _rate(
            lambda pairs=pairs: [judge_problem(p, s) for p, s in pairs], len(pairs), args.seconds
        )
        rows.append(
            {
                "set": name,
                "what": "judge (problem parsed)",
                "peer": PEER[name],
                "ours_cpu": cpu,
                "ours_wall": wall,
                "ratio": cpu / PEER[name],
            }
        )

        def parse_and_judge(recs=recs):
            parse_problem.cache_clear()
            for r in recs:
                judge_problem(parse_problem(r["problem"]), r["solution"])

        cpu, wall = _rate(parse_and_judge, len(recs), args.seconds)
        rows.append(
            {
                "set": name,
                "what": "parse problem + judge",
                "peer": None,
                "ours_cpu": cpu,
                "ours_wall": wall,
                "ratio": None,
            }
        )
    print(
        f"{'set':6} {'what':24} {'official/s':>10} {'ours/s cpu':>11} {'ours/s wall':>11} "
        f"{'ratio':>6}"
    )
    for r in rows:
        peer = f"{r['peer']:,}" if r["peer"] else "-"
        ratio = f"{r['ratio']:.2f}" if r["ratio"] else "-"
        print(
            f"{r['set']:6} {r['what']:24} {peer:>10} {r['ours_cpu']:>11,.0f} "
            f"{r['ours_wall']:>11,.0f} {ratio:>6}"
        )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
