"""Stage 8: the template bin of a planned solution, for the train/test split (SPEC §14), jittable.

The official generator hashes a "sketch" of the solution text (parameter names replaced by
"Inst"/"Inter", numbers by "0", ";" by ".", symbols renamed a, b, c, ... by first appearance) with
SHA-256 and keeps problems whose hash mod 23 is in the allowed bins (train: 0-15, test: 16-22).
The sketch is a function of the step plan only, so it is assembled here as bytes straight from
`plan.Plan` and hashed with a JAX SHA-256 (uint32 arithmetic), giving the official bins without
rendering any text. `text/sketch.py` is the host-side reference used by the tests.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from physics_lm.data.igsm.gen.layout import FragmentTable, assemble
from physics_lm.data.igsm.gen.plan import Plan
from physics_lm.data.igsm.gen.structure import NI
from physics_lm.data.igsm.text.sketch import LETTERS, N_BINS

_FRAGS = [" ", ". ", "Define Inst as ", "Define Inter as ", "so ", "0", " = ", " + ", " - ",
          " * ", " = 0 + 0", " = 0 - 0", " = 0 * 0", " = 0", ".", "", *LETTERS]
(_SP, _SEP, _DI, _DA, _SO, _ZERO, _EQ, _PL, _MI, _TI, _CPL, _CMI, _CTI, _EQ0, _DOT,
 _EMPTY) = range(16)
_LET = 16
TABLE = FragmentTable([list(f.encode()) for f in _FRAGS])
UNROLL = 8  # rounds per loop iteration: 2.4x faster than 1; 64 compiles for minutes

_K = np.array([
    0x428A2F98, 0x71374491, 0xB5C0FBCF, 0xE9B5DBA5, 0x3956C25B, 0x59F111F1, 0x923F82A4, 0xAB1C5ED5,
    0xD807AA98, 0x12835B01, 0x243185BE, 0x550C7DC3, 0x72BE5D74, 0x80DEB1FE, 0x9BDC06A7, 0xC19BF174,
    0xE49B69C1, 0xEFBE4786, 0x0FC19DC6, 0x240CA1CC, 0x2DE92C6F, 0x4A7484AA, 0x5CB0A9DC, 0x76F988DA,
    0x983E5152, 0xA831C66D, 0xB00327C8, 0xBF597FC7, 0xC6E00BF3, 0xD5A79147, 0x06CA6351, 0x14292967,
    0x27B70A85, 0x2E1B2138, 0x4D2C6DFC, 0x53380D13, 0x650A7354, 0x766A0ABB, 0x81C2C92E, 0x92722C85,
    0xA2BFE8A1, 0xA81A664B, 0xC24B8B70, 0xC76C51A3, 0xD192E819, 0xD6990624, 0xF40E3585, 0x106AA070,
    0x19A4C116, 0x1E376C08, 0x2748774C, 0x34B0BCB5, 0x391C0CB3, 0x4ED8AA4A, 0x5B9CCA4F, 0x682E6FF3,
    0x748F82EE, 0x78A5636F, 0x84C87814, 0x8CC70208, 0x90BEFFFA, 0xA4506CEB, 0xBEF9A3F7, 0xC67178F2,
], np.uint32)
_H0 = np.array([0x6A09E667, 0xBB67AE85, 0x3C6EF372, 0xA54FF53A, 0x510E527F, 0x9B05688C,
                0x1F83D9AB, 0x5BE0CD19], np.uint32)
_POW = np.array([pow(2, 32 * (7 - i), N_BINS) for i in range(8)], np.uint32)


def sketch_bytes(plan: Plan, max_bytes: int):
    """(bytes int32[max_bytes], length) of the official sketch of the planned solution."""
    g = jnp.arange(plan.valid.shape[0])
    start = plan.param_var - jnp.sum(  # first step of the parameter = its var - (steps - 1)
        (plan.pos[None, :] == plan.pos[:, None]) & plan.valid[None, :], axis=1) + 1

    def renamed(var):
        is_final = jnp.any((plan.param_var == var[:, None]) & plan.valid[None, :], axis=1)
        st = jnp.max(jnp.where((plan.param_var == var[:, None]) & plan.valid[None, :],
                               start[None, :], 0), axis=1)
        return jnp.where(is_final, st, var + 1)

    ra, rb = renamed(plan.a_var), renamed(plan.b_var)
    own = jnp.where(plan.final, start, g + 1)
    is_abs = plan.slot >= NI
    sep = jnp.where(g == 0, _SP, _SEP)
    seg = jnp.stack([
        jnp.where(plan.first, sep, _EMPTY),
        jnp.where(plan.first, jnp.where(is_abs, _DA, _DI), _EMPTY),
        jnp.where(plan.first, _LET + start, _EMPTY),
        jnp.full_like(g, _SEP),
        jnp.where(plan.final, _SO, _EMPTY),
        _LET + own,
        jnp.where(plan.n_opnd >= 1, _EQ, _EMPTY),
        jnp.where(plan.n_opnd >= 1, jnp.where(plan.a_var >= 0, _LET + ra, _ZERO), _EMPTY),
        jnp.where(plan.n_opnd == 2, _PL + plan.sign, _EMPTY),
        jnp.where(plan.n_opnd == 2, jnp.where(plan.b_var >= 0, _LET + rb, _ZERO), _EMPTY),
        jnp.where(plan.n_opnd == 2, _CPL + plan.sign, _EMPTY),
        jnp.full_like(g, _EQ0),
    ], axis=1)
    seg = jnp.where(plan.valid[:, None], seg, _EMPTY).reshape(-1)
    seg = jnp.concatenate([seg, jnp.array([_DOT])])
    # the final "." goes right after the last valid segment: empty segments have length 0
    out, total, _ = assemble(seg, TABLE, max_bytes)
    return out, total


def _rotr(x, n):
    return (x >> n) | (x << (32 - n))


def _sigma(x, r1, r2, shift):
    return _rotr(x, r1) ^ _rotr(x, r2) ^ (x >> shift)


def sha256_mod(msg: jax.Array, length: jax.Array) -> jax.Array:
    """int(sha256(msg[n, :length[n]]).hexdigest(), 16) % 23 for a batch of messages (bytes as
    int32 [N, max_bytes]).

    Batched by hand, with the message axis minor ([16, N] words, [8, N] state) and the schedule
    computed once per block: every round is a few ops on contiguous [N] vectors. (Vmapped, the
    rolling [N, 16] schedule was copied to a new layout in every round; this is ~10 % faster,
    measured on 192 sketches.) The block loop runs to the longest message; shorter ones keep their
    state."""
    n, max_bytes = msg.shape
    nb_max = (max_bytes + 9 + 63) // 64
    t = jnp.arange(nb_max * 64)[None, :]
    m = jnp.pad(msg, ((0, 0), (0, nb_max * 64 - max_bytes))).astype(jnp.uint32)
    ln = length[:, None]
    nb = (length + 9 + 63) // 64
    end = nb[:, None] * 64
    bitlen = (ln * 8).astype(jnp.uint32)
    lenbyte = (bitlen >> (8 * jnp.clip(end - 1 - t, 0, 3)).astype(jnp.uint32)) & 0xFF
    b = jnp.where(t < ln, m, jnp.where(t == ln, jnp.uint32(0x80), jnp.uint32(0)))
    b = jnp.where((t >= end - 4) & (t < end), lenbyte, b)
    b = b.reshape(n, nb_max, 16, 4)
    words = (b[..., 0] << 24) | (b[..., 1] << 16) | (b[..., 2] << 8) | b[..., 3]
    words = jnp.transpose(words, (1, 2, 0))  # [block, 16, N]
    K = jnp.asarray(_K)

    def block(h, w16):
        w = list(w16)
        for i in range(16, 64):  # the message schedule, [64, N]
            w.append(_sigma(w[i - 2], 17, 19, 10) + w[i - 7] + _sigma(w[i - 15], 7, 18, 3)
                     + w[i - 16])
        W = jnp.stack(w)

        def rnd(i, s):
            a, b_, c, d, e, f, g, hh = s
            ch = (e & f) ^ (~e & g)
            t1 = hh + (_rotr(e, 6) ^ _rotr(e, 11) ^ _rotr(e, 25)) + ch + K[i] + W[i]
            t2 = (_rotr(a, 2) ^ _rotr(a, 13) ^ _rotr(a, 22)) + ((a & b_) ^ (a & c) ^ (b_ & c))
            return (t1 + t2, a, b_, c, d + t1, e, f, g)

        out = jax.lax.fori_loop(0, 64, rnd, tuple(h[i] for i in range(8)), unroll=UNROLL)
        return h + jnp.stack(out)

    def body(c):
        h, i = c
        return jnp.where(i < nb[None, :], block(h, words[i]), h), i + 1

    h0 = jnp.broadcast_to(jnp.asarray(_H0)[:, None], (8, n))
    h, _ = jax.lax.while_loop(lambda c: c[1] < jnp.max(nb), body, (h0, jnp.int32(0)))
    return (jnp.sum((h % N_BINS) * jnp.asarray(_POW)[:, None], axis=0) % N_BINS).astype(jnp.int32)


def template_bins(plans: Plan, max_bytes: int) -> jax.Array:
    """The official template hash bins (0-22) of a batch of planned solutions."""
    msg, length = jax.vmap(lambda p: sketch_bytes(p, max_bytes))(plans)
    return sha256_mod(msg, length)


def max_sketch_bytes(n_steps: int) -> int:
    """Static bound on the sketch length for `n_steps` steps."""
    return 2 + n_steps * 46
