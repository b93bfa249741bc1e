"""The on-device iGSM generator: the official procedure with static shapes, in pure JAX.

The stages, in the order a problem goes through them (one candidate each, no batch axis, vmapped
by the driver unless said otherwise):

  1. hyper.py          the op: each row's target op and each candidate's op budget s, with the
                       other graph hyper-parameters (depth, widths, edge count, ...)
  2. structure.py      the structure graph and the necessary parameters (`choose_param`); the
                       97-slot parameter axis and its geometry
  3. sort.py           the backward topological sort: the order of the solution
  4. design.py         operand counts from the op budget: each solution step's dependencies
  5. candidate.py      one outer attempt (inner retries until the sort succeeds, then design)
                       -> `Template`; batched over a pool of candidates
     sampler.py        selection: rows take candidates of their target op (and allowed bin)
  6. unnecessary.py    the unnecessary parameters of each selected candidate (`design_unused`)
     reask.py          reask sets only: a new question among the problem's parameters, its
                       necessary set and solution order (and the driver of such sets)
  7. plan.py           the solution as static steps, and every solution parameter's value
  8. template_hash.py  the sketch of the solution and its SHA-256 bin (train/test split)
  9. retry.py          retry data only (Part 2.2): the wrong parameters written as
                       "Define <X> as BACK." before each solution sentence
 10. render.py         names, sentence order, symbols -> the token row
 11. probe_arrays.py   V-probing label arrays
     sampler.py        the driver: `SamplerConfig`, `sample_arrays` (all of the above)
     pack.py           packed rows only: several rendered problems per row of the context

Helpers: rand.py (counter-based draws from one uint32 seed), streams.py (the salt of every random
stream, named in one place), chunked.py (rows in chunks grouped by loop length), layout.py
(packing variable-length fragments into a fixed-length row).

Which file answers which question:
  Where is op drawn?                           hyper.py (nowhere else: later stages spend it)
  Why does a batch hold the official op law?   sampler.py (matching rows to candidates by op)
  Which parameters does the question need?     structure.py (`choose_param`)
  In what order is the solution written?       sort.py
  How many operands, and which, per step?      design.py
  What is retried, and what is rejected?       candidate.py (inner tries), sampler.py (rows)
  Where do the distracting sentences come from?  unnecessary.py
  What does each solution step compute?        plan.py
  Which template bin (train or test)?          template_hash.py (host reference: text/sketch.py)
  Which names, sentence order and letters?     render.py
  What do the probe labels hold?               probe_arrays.py (host version:
                                               text/probe_labels.py)
  Which random stream does a draw use?         streams.py
  How is a problem asked about another param?  reask.py (Part 2.1 "reask" sets)
  Which mistakes does retry data make?         retry.py (host reference: text/retry.py)
  How do problems share a row of the context?  pack.py
"""
