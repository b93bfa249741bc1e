"""Stage 10: the V-probing label arrays of a sampled problem, on device (SPEC §15).

Columns in the official `all_param` order. Same semantics as the host-side
`text/probe_labels.py` `row_labels` / `pair_labels` (pinned by a test):
rows r = 0..S (row 0 before the solution, row r after the r-th solution sentence), columns the
<= 72 parameters of `all_param` (instance pairs in (i, j, k) order, then abstract ones), padded.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from physics_lm.data.igsm.gen.candidate import Template
from physics_lm.data.igsm.gen.probe_names import column_slots
from physics_lm.data.igsm.gen.structure import (
    NI,
    NP,
    RNG,
    abs_valid,
    inst_possible,
    struct_matrix,
)

MOD = 23


def probe_arrays(tpl: Template, val_97: jax.Array) -> dict[str, jax.Array]:
    """Per-problem arrays: exists/nece [72], known/value/can_next/nece_next [S+1, 72], dep and
    neighbor [72, 72] (row depends on column), n_params, question (its column)."""
    possible = jnp.concatenate([inst_possible(tpl.d, tpl.l_D), abs_valid(tpl.d, tpl.l_D),
                                jnp.zeros(1, jnp.bool_)])
    sl, col_ok = column_slots(tpl)
    # direct dependencies u -> v (u depends on v), RNG excluded
    ideps = tpl.ideps_48x4
    inst_dep = jnp.any((ideps[:, :, None] == jnp.arange(NP)[None, None, :]) & (ideps[:, :, None]
                                                                              != RNG), axis=1)
    D = jnp.concatenate([inst_dep, struct_matrix(tpl.G_3x4x4).T[NI:]], axis=0)  # [97, 97]
    D = D & possible[:, None] & possible[None, :]
    S = tpl.topo_S.shape[0]
    pos = jnp.full(NP + 1, S + 1, jnp.int32).at[jnp.where(tpl.topo_S >= 0, tpl.topo_S, NP)].set(
        jnp.arange(S))[:NP]
    r = jnp.arange(S + 1)[:, None]
    known = pos[None, :] < r  # [S+1, 97]
    known_rng = known.at[:, RNG].set(True)
    can = ~known & ~jnp.any(D[None, :, :] & ~known_rng[:, None, :], axis=2)
    nece = pos < S
    dep = D
    for _ in range(7):
        dep = dep | (jnp.einsum("ij,jk->ik", dep.astype(jnp.float32), dep.astype(jnp.float32))
                     > 0)
    row_ok = r <= tpl.n_sol
    def pick(a):
        return jnp.where(col_ok, a[..., sl], False)

    value = jnp.where(known, val_97[None, :], MOD)
    return {
        "probe_exists": pick(possible & jnp.concatenate([tpl.tmpl_P[:NI] | (jnp.arange(NI) < 0),
                                                         jnp.ones(NP - NI, jnp.bool_)])),
        "probe_nece": pick(nece),
        "probe_known": pick(known) & row_ok,
        "probe_value": jnp.where(col_ok & row_ok, value[:, sl], MOD),
        "probe_can_next": pick(can) & row_ok,
        "probe_nece_next": pick(can & nece[None, :]) & row_ok,
        "probe_dep": jnp.where(col_ok[:, None] & col_ok[None, :], dep[sl][:, sl], False),
        "probe_neighbor": jnp.where(col_ok[:, None] & col_ok[None, :], D[sl][:, sl], False),
        "probe_n_params": jnp.sum(possible),
        "probe_question": jnp.argmax(col_ok & (sl == tpl.topo_S[jnp.maximum(tpl.n_sol - 1, 0)])),
    }
