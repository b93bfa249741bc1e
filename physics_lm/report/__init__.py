"""`python -m physics_lm.report --root runs/<sweep>`: the papers' tables from a sweep's workdirs.

Reads every run under the root (a folder with `config.json`, found recursively): its
`eval/*.json`, `probe/*.json` and `regret/*.json` as the modes write them, and writes
`<root>/report.md` (or `--out`) with the Part 1 / 2.1 / 2.2 tables, plus PNG figures beside it.
A run, a file or a key that is absent is a gap ("—") in the tables, never an error: a sweep is
reported while it is still running.

  runs.py      finding runs and reading their JSON (`Run`)
  tables.py    the Markdown tables, one function per paper table
  curves.py    Part 1 learning curves from metrics.jsonl, along `train.init_from` forks
  figures.py   the PNG figures (matplotlib, Agg)
  __main__.py  the command line

Keys read (all optional): config.json task.{name, grammar, preset, fmt, retry, retry_rate,
retry_mask}, model.{num_layers, d_model, num_heads, pos}, train.{init_from, lora_rank,
lora_ranks}; eval/cfg.json generation.cut0.T*.accuracy, distribution.kl, control.*;
probe/cfg.json results.<kind>.<last layer>.level<l>.ancestor.{trained, control}.acc_boundary;
eval/igsm.json cells.<cell>.{accuracy, back_mean}, eval_config.{decoder, beam};
probe/igsm.json results.<task>.id.{trained, control}.acc; regret/igsm.json (mode=regret)
table.<row>.<cell>.accuracy with rows beam<k> / regret_<detector>; metrics.jsonl's eval_loss,
eval/distribution/kl and eval/generation/cut{0,50}/T*/{accuracy, n} (periodic evals), with
train.{batch_size, init_from} and task.seq_len for the tokens axis.
"""
