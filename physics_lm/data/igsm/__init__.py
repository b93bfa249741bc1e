"""Part 2 data: the iGSM grade-school-math language, generated on device, and its host tools.

The folder follows the data's path:

  gen/          the on-device generator (pure JAX, jittable, static shapes), one stage a file in
                pipeline order; its docstring says which file answers which question.
  task.py       `IGSMTask`, the `Task` the trainer calls: validated settings -> `gen.sampler`.
  cells.py      the evaluation cells of a training task (op<=M, op=M, OOD ops, reask), each a
                pure function of (eval seed, cell).
  text/         host-side text tools (plain Python and numpy, no JAX): `vocab` (text <-> token
                ids), `names` (+ names.json, NAMES_SOURCE.md), `parser` (problem text -> graph),
                `judge` (is a solution correct and shortest?), `probe_labels` (V-probing labels
                from text), `sketch` (host reference of the template hash), `retry` (retry
                solutions: their BACK sentences and the legal wrong parameters).
  __main__.py   `python -m physics_lm.data.igsm COMMAND`: `judge` and `tokenize` (JSONL of texts;
                judge_cli.py, tokenize_cli.py, no JAX) and `sample` (sample_cli.py, on device).
"""
