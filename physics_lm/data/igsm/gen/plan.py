"""Stage 7: the solution's step plan and values of one iGSM problem (SPEC §10, §12), pure JAX.

A solution parameter is written as 1-7 `=`-chains ("steps"): temporaries, then `so s = ...`.
Which steps a parameter gets depends only on its "shape" (instance/abstract, operand count, RNG),
so the plan is a gather from a small static table (`_SHAPES`) instead of the official recursive
`Expression.simplify/binarify/to_sol`; the table was written from that recursion (fold left into
temporaries, products of an abstract parameter emitted depth first) and is pinned by the tests.
Step g (0-based, over the whole solution) defines variable g, so the variable of solution
parameter r is its last step, and symbols are a random permutation of the 52 letters indexed by g.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from physics_lm.data.igsm.gen import rand, streams
from physics_lm.data.igsm.gen.candidate import Template
from physics_lm.data.igsm.gen.structure import (
    NI,
    NP,
    RNG,
    SLOT_I,
    SLOT_K,
    SLOT_KIND,
    struct_preds,
)

# Operand source codes of the shape table.
NONE, CONST, CRES, ZRES = 16, 15, 17, 18  # none / the constant c / "so s = c" / "so s = 0"
PLUS, MINUS, TIMES, ROP, FSIGN = 0, 1, 2, 3, 4  # ROP: + or * (RNG); FSIGN: + or - (2 operands)
MAX_LOCAL = 7


def _t(q: int) -> int:
    return 8 + q


_SHAPE_LIST = [
    # instance without RNG, q = 1..4 operands
    [(0, NONE, PLUS)],
    [(0, 1, FSIGN)],
    [(0, 1, PLUS), (_t(0), 2, PLUS)],
    [(0, 1, PLUS), (_t(0), 2, PLUS), (_t(1), 3, PLUS)],
    # instance with RNG, q = 0..3 operands
    [(CRES, NONE, PLUS)],
    [(CONST, 0, ROP)],
    [(0, 1, FSIGN), (CONST, _t(0), ROP)],
    [(0, 1, PLUS), (_t(0), 2, PLUS), (CONST, _t(1), ROP)],
    # abstract A(i, j, i+1), c = 0..4 children
    [(ZRES, NONE, PLUS)],
    [(0, NONE, PLUS)],
    [(0, 1, PLUS)],
    [(0, 1, PLUS), (_t(0), 2, PLUS)],
    [(0, 1, PLUS), (_t(0), 2, PLUS), (_t(1), 3, PLUS)],
    # abstract A(i, j, k > i+1), c = 0..4 children; leaves I1, A1, I2, A2, ...
    [(ZRES, NONE, PLUS)],
    [(0, 1, TIMES)],
    [(0, 1, TIMES), (2, 3, TIMES), (_t(0), _t(1), PLUS)],
    [(0, 1, TIMES), (2, 3, TIMES), (_t(0), _t(1), PLUS), (4, 5, TIMES), (_t(2), _t(3), PLUS)],
    [(0, 1, TIMES), (2, 3, TIMES), (_t(0), _t(1), PLUS), (4, 5, TIMES), (_t(2), _t(3), PLUS),
     (6, 7, TIMES), (_t(4), _t(5), PLUS)],
]
N_STEPS = np.array([len(s) for s in _SHAPE_LIST], np.int32)
_SHAPES = np.full((len(_SHAPE_LIST), MAX_LOCAL, 3), NONE, np.int32)
for _c, _steps in enumerate(_SHAPE_LIST):
    for _q, _st in enumerate(_steps):
        _SHAPES[_c, _q] = _st


class Consts(NamedTuple):
    """Per-instance-slot random choices of the problem sentences (SPEC §10)."""

    c_48: jax.Array  # int32 the constant (1..22 when multiplying, else 0..22)
    mul_48: jax.Array  # bool "times as much as" (else "more than")
    diff_48: jax.Array  # bool two operands: "difference" (else "sum")


class Plan(NamedTuple):
    """The solution as N static steps (N = op bound); fields are [N] arrays."""

    valid: jax.Array  # bool step exists (g < op)
    pos: jax.Array  # solution position r of the step's parameter
    first: jax.Array  # bool first step of its parameter (gets the "Define ... as s;" prefix)
    final: jax.Array  # bool the `so s = ...` step
    n_opnd: jax.Array  # 0, 1 or 2 operands in the hint
    a_var: jax.Array  # operand a: variable index (-1 = constant)
    b_var: jax.Array
    a_val: jax.Array  # operand values (constant or variable value)
    b_val: jax.Array
    sign: jax.Array  # 0 '+', 1 '-', 2 '*'
    res: jax.Array  # result value
    param_var: jax.Array  # variable of the step's parameter (its final step)
    slot: jax.Array  # parameter slot of the step
    ok: jax.Array  # bool scalar: every parameter operand is computed by an earlier step


def draw_consts(seed: jax.Array) -> Consts:
    """The sentence constants of every instance slot, from the candidate's seed. Drawn again,
    identically, wherever they are needed (template bins of candidates, rendering)."""
    u = rand.uniform(seed, streams.CONSTS, 0, 4 * NI).reshape(4, NI)
    mul = u[1] >= 0.5
    c = jnp.where(mul, rand.randint(u[0], 1, 22), rand.randint(u[0], 0, 22))
    return Consts(c, mul, u[2] >= 0.5)


def operands(ideps_48x4: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """(opnd_48x4 non-RNG deps in order (-1 pad), q_48 count, rng_48 flag)."""
    real = (ideps_48x4 >= 0) & (ideps_48x4 != RNG)
    key = jnp.where(real, jnp.arange(4)[None, :], 9)
    order = rand.sort_order(key)
    opnd = jnp.where(jnp.take_along_axis(real, order, 1),
                     jnp.take_along_axis(ideps_48x4, order, 1), -1)
    return opnd, jnp.sum(real, axis=1), jnp.any(ideps_48x4 == RNG, axis=1)


def abs_leaves(G_3x4x4: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(leaves_48x8 slots in operand order (-1 pad), children count c_48) of abstract slots."""
    preds = struct_preds(G_3x4x4)  # [48, 8]: 4 child instance, 4 lower abstract
    present = preds[:, :4] >= 0
    order = rand.sort_order(jnp.where(present, jnp.arange(4)[None, :], 9))
    inst = jnp.take_along_axis(preds[:, :4], order, 1)
    low = jnp.take_along_axis(preds[:, 4:], order, 1)
    far = jnp.asarray(SLOT_K[NI:RNG] > SLOT_I[NI:RNG] + 1)[:, None]
    inter = jnp.stack([inst, low], axis=2).reshape(-1, 8)
    near = jnp.concatenate([inst, jnp.full_like(inst, -1)], axis=1)
    return jnp.where(far, inter, near), jnp.sum(present, axis=1)


def plan_solution(tpl: Template, cs: Consts, n_steps: int) -> Plan:
    """Lays the solution out as `n_steps` static steps and evaluates them (module docstring).

    Values come from the steps themselves: an operand that is a parameter reads the result of
    that parameter's final step, which the topological order puts earlier (`Plan.ok` checks it),
    so no fixed-point evaluation of the whole template is needed -- only solution parameters'
    values are ever printed or probed."""
    opnd, q, rng = operands(tpl.ideps_48x4)
    leaves_A, c_A = abs_leaves(tpl.G_3x4x4)
    S = tpl.topo_S.shape[0]
    slot = jnp.maximum(tpl.topo_S, 0)
    pvalid = tpl.topo_S >= 0
    kind = jnp.asarray(SLOT_KIND)[slot]
    a_idx = jnp.clip(slot - NI, 0, 47)
    i_idx = jnp.minimum(slot, NI - 1)
    far = jnp.asarray(SLOT_K > SLOT_I + 1)[slot]
    shape = jnp.where(kind == 0, jnp.where(rng[i_idx], 4 + q[i_idx], q[i_idx] - 1),
                      jnp.where(far, 13, 8) + c_A[a_idx])
    inst_leaves = jnp.concatenate([opnd[i_idx], jnp.full((S, 4), -1)], axis=1)
    leaves = jnp.where((kind == 0)[:, None], inst_leaves, leaves_A[a_idx])
    nst = jnp.where(pvalid, jnp.asarray(N_STEPS)[shape], 0)
    start = jnp.cumsum(nst) - nst  # first global step of position r
    # variable of each slot = last step of its solution position
    pos_of_slot = jnp.full(NP + 1, -1, jnp.int32).at[jnp.where(pvalid, slot, NP)].set(
        jnp.arange(S))[:NP]
    var_of_slot = jnp.where(pos_of_slot >= 0, start[jnp.maximum(pos_of_slot, 0)]
                            + nst[jnp.maximum(pos_of_slot, 0)] - 1, -1)
    g = jnp.arange(n_steps)
    r = jnp.clip(jnp.searchsorted(start + nst, g, side="right"), 0, S - 1)
    lq = g - start[r]
    valid = g < jnp.sum(nst)
    sh = jnp.asarray(_SHAPES)[shape[r], jnp.clip(lq, 0, MAX_LOCAL - 1)]  # [n_steps, 3]
    c_r = cs.c_48[i_idx[r]]
    sign = jnp.where(sh[:, 2] == ROP, jnp.where(cs.mul_48[i_idx[r]], TIMES, PLUS),
                     jnp.where(sh[:, 2] == FSIGN, jnp.where(cs.diff_48[i_idx[r]], MINUS, PLUS),
                               sh[:, 2]))
    lv = leaves[r]  # [n_steps, 8]

    def src(code):
        is_leaf = code < 8
        is_tmp = (code >= 8) & (code < 15)
        leaf = jnp.take_along_axis(lv, jnp.clip(code, 0, 7)[:, None], 1)[:, 0]
        var = jnp.where(is_leaf, var_of_slot[jnp.maximum(leaf, 0)],
                        jnp.where(is_tmp, start[r] + code - 8, -1))
        return var, jnp.where(code == CONST, c_r, 0), is_leaf

    a_var, a_c, a_leaf = src(sh[:, 0])
    b_var, b_c, b_leaf = src(sh[:, 1])
    # operands that are variables (parameters or temporaries) read earlier steps' results
    no_hint = (sh[:, 0] == CRES) | (sh[:, 0] == ZRES)
    n_opnd = jnp.where(no_hint, 0, jnp.where(sh[:, 1] == NONE, 1, 2))

    def scan_fn(res_all, k):
        av = jnp.where(a_var[k] >= 0, res_all[jnp.maximum(a_var[k], 0)], a_c[k])
        bv = jnp.where(b_var[k] >= 0, res_all[jnp.maximum(b_var[k], 0)], b_c[k])
        out = jnp.where(sign[k] == TIMES, av * bv, jnp.where(sign[k] == MINUS, av - bv, av + bv))
        out = jnp.where(n_opnd[k] == 1, av, out)
        out = jnp.where(sh[k, 0] == CRES, c_r[k], jnp.where(sh[k, 0] == ZRES, 0, out)) % 23
        return res_all.at[k].set(out), (av, bv, out)

    _, (a_val, b_val, res) = jax.lax.scan(scan_fn, jnp.zeros(n_steps, jnp.int32), g)
    last = lq == nst[r] - 1
    # every parameter operand is a solution parameter whose final step comes earlier
    ok = jnp.all(~valid | ((~a_leaf | ((a_var >= 0) & (a_var < g)))
                           & (~b_leaf | ((b_var >= 0) & (b_var < g)))))
    return Plan(valid, r, valid & (lq == 0), valid & last, n_opnd, a_var, b_var, a_val, b_val,
                sign, res, start[r] + nst[r] - 1, slot[r], ok)


def solution_values(plan: Plan) -> jax.Array:
    """int32[97]: each solution parameter's value (its final step's result), 0 elsewhere."""
    at = jnp.where(plan.final, plan.slot, NP)
    return jnp.zeros(NP, jnp.int32).at[at].set(plan.res, mode="drop")
