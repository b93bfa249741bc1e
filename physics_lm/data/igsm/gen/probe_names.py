"""The name of every probe column as token ids, so V-probe queries are built on device.

A V-probe query appends ``<start> X 's Y <end>`` (the parameter's name exactly as the problem
writes it, `Problem.name` on the host) to a truncated row. Columns are those of
`probe_arrays.py` (the official `all_param` order), the names those the renderer drew for the
row (`Rendered.item_frag_4x4`, `cat_frag_4`), so a query names a parameter with the very tokens
the model read.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from physics_lm.data.igsm.gen.candidate import Template
from physics_lm.data.igsm.gen.layout import assemble
from physics_lm.data.igsm.gen.render import Tables
from physics_lm.data.igsm.gen.structure import (
    NI,
    NP,
    SLOT_I,
    SLOT_J,
    SLOT_K,
    SLOT_KIND,
    abs_valid,
    inst_possible,
)

N_ALL = 72


def column_slots(tpl: Template) -> tuple[jax.Array, jax.Array]:
    """(slot int32[72], ok bool[72]): the parameter slot of each `all_param` column (instance
    pairs of the structure's layers in (i, j, k) order, then the abstract ones), padded."""
    possible = jnp.concatenate([inst_possible(tpl.d, tpl.l_D), abs_valid(tpl.d, tpl.l_D),
                                jnp.zeros(1, jnp.bool_)])
    idx = jnp.cumsum(possible) - 1
    slot_of = jnp.full(N_ALL + 1, NP, jnp.int32).at[jnp.where(possible, idx, N_ALL)].set(
        jnp.arange(NP))[:N_ALL]
    ok = slot_of < NP
    return jnp.minimum(slot_of, NP - 1), ok


def name_len(tb: Tables | None = None) -> int:
    """Static bound on a name's tokens: two names and the "'s" between them (`tb`: the
    sampler's tables; default: the shared vocabulary's)."""
    if tb is None:
        from physics_lm.data.igsm.task import _tables
        tb = _tables()
    return 2 * int(np.max(tb.frags.lens[tb.vocab.size:])) + 1


def probe_names(tpl: Template, item_frag_4x4: jax.Array, cat_frag_4: jax.Array,
                tb: Tables) -> dict[str, jax.Array]:
    """{"probe_name": int32[72, L] (pad-filled), "probe_name_len": int32[72] (0 = no column),
    "probe_abstract": bool[72] (an abstract parameter: "X's <category>")}."""
    slot, ok = column_slots(tpl)
    i, j, k = (jnp.asarray(a)[slot] for a in (SLOT_I, SLOT_J, SLOT_K))
    owner = item_frag_4x4[i, j]
    target = jnp.where(jnp.asarray(SLOT_KIND)[slot] == 0,
                       item_frag_4x4[jnp.minimum(i + 1, 3), k], cat_frag_4[k])
    frags_72x3 = jnp.stack([owner, jnp.full_like(owner, tb.w["'s"]), target], axis=1)
    width = name_len(tb)
    tokens, length, _ = jax.vmap(lambda f: assemble(f, tb.frags, width,
                                                    fill=tb.vocab.pad_id))(frags_72x3)
    return {"probe_name": tokens, "probe_name_len": jnp.where(ok, length, 0),
            "probe_abstract": ok & (slot >= NI)}
