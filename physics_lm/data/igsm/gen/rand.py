"""Counter-based random numbers for the iGSM sampler (a 32-bit integer hash, no threefry).

Why not `jax.random` inside the generator: the official procedure makes hundreds of small random
choices inside data-dependent loops. With `jax.random` every call site adds a threefry graph,
which made XLA:CPU compile for minutes and run slowly. Here each candidate gets ONE uint32 seed
from `jax.random.bits(key)`; every other draw is `hash(seed, salt, step, index)` (the "lowbias32"
integer finaliser), which is cheap to compile and run, deterministic on any device count, and of
ample statistical quality for sampling (not for cryptography). The salts are named in
`streams.py`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

_GOLDEN = 0x9E3779B9
RANK_UNROLL = 4


def _mix(x: jax.Array) -> jax.Array:
    x = x ^ (x >> 16)
    x = x * jnp.uint32(0x7FEB352D)
    x = x ^ (x >> 15)
    x = x * jnp.uint32(0x846CA68B)
    return x ^ (x >> 16)


def seed_of(key: jax.Array) -> jax.Array:
    """One uint32 seed from a JAX key (the only threefry call per candidate)."""
    return jax.random.bits(key, (), jnp.uint32)


def bits(seed: jax.Array, salt: int, t: jax.Array | int, n: int) -> jax.Array:
    """uint32[n] for (seed, salt, t)."""
    base = _mix(seed ^ _mix(jnp.uint32(salt) * jnp.uint32(_GOLDEN) + jnp.asarray(t, jnp.uint32)))
    idx = jnp.arange(n, dtype=jnp.uint32)
    return _mix(base ^ _mix(idx * jnp.uint32(_GOLDEN) + jnp.uint32(0x632BE5AB)))


def uniform(seed: jax.Array, salt: int, t: jax.Array | int, n: int) -> jax.Array:
    """float32[n] uniform in [0, 1) with 24 random bits."""
    return (bits(seed, salt, t, n) >> 8).astype(jnp.float32) * (1.0 / (1 << 24))


def choice(u: jax.Array, mask: jax.Array) -> jax.Array:
    """Uniform index among `mask` given iid uniforms `u` of the same shape (argmax trick)."""
    return jnp.argmax(jnp.where(mask, u, -1.0))


def class_choice(u: jax.Array, u_cls: jax.Array, mask: jax.Array, cls: jax.Array, n_cls: int,
                 beta: jax.Array) -> jax.Array:
    """Index i among `mask` drawn with probability proportional to exp(beta * cls[i]).

    Why not Gumbel-max: the weights take only `n_cls` values, so one uniform picks the class
    (by its total weight) and the argmax trick picks uniformly inside it -- exact, and no
    per-element logarithms."""
    hot = mask[None, :] & (cls[None, :] == jnp.arange(n_cls)[:, None])
    w = jnp.sum(hot, axis=1) * jnp.exp(beta * jnp.arange(n_cls))
    c = jnp.minimum(jnp.sum(u_cls * jnp.sum(w) >= jnp.cumsum(w)), n_cls - 1)
    c = jnp.where(w[c] > 0, c, n_cls - 1 - jnp.argmax((w > 0)[::-1]))  # float rounding
    return choice(u, mask & (cls == c))


def randint(u: jax.Array, lo: jax.Array | int, hi: jax.Array | int) -> jax.Array:
    """Uniform integer in [lo, hi] (inclusive) from a uniform `u`."""
    lo = jnp.asarray(lo, jnp.int32)
    span = jnp.asarray(hi, jnp.int32) - lo + 1
    return lo + jnp.minimum((u * span).astype(jnp.int32), span - 1)


def smallest_k(keys: jax.Array, k: int) -> tuple[jax.Array, jax.Array]:
    """(indices, keys) of the k smallest keys, ascending (top_k is cheaper than a full sort)."""
    neg, idx = jax.lax.top_k(-keys, k)
    return idx, -neg


def ranks(keys: jax.Array) -> jax.Array:
    """Stable rank of each key along the last axis (= argsort(argsort(keys))), by pairwise
    comparison. Why: the axes here are short (<= 52), and vmapped XLA:CPU sorts cost ~10x more
    than the n^2 vectorised compares. One [.., n] compare per key j, in a loop: the loop keeps
    the work in registers (3x faster than materialising the [.., n, n] comparison) and is a
    fusion boundary -- unrolled, XLA fused the n compares into every consumer of the ranks and
    into the keys' hash, recomputing them per element (measured 5-100x slower)."""
    n = keys.shape[-1]
    i = jnp.arange(n)

    def body(j, r):
        kj = jax.lax.dynamic_index_in_dim(keys, j, axis=keys.ndim - 1, keepdims=True)
        return r + ((kj < keys) | ((kj == keys) & (j < i))).astype(jnp.int32)

    return jax.lax.fori_loop(0, n, body, jnp.zeros(keys.shape, jnp.int32), unroll=RANK_UNROLL)


def sort_order(keys: jax.Array, k: int | None = None) -> jax.Array:
    """argsort(keys, axis=-1)[..., :k] (stable) for short axes, without a sort (see `ranks`).

    The inverse permutation is a scatter, not a one-hot sum: XLA fuses the rank computation into
    an [.., k, n] one-hot consumer and recomputes it k times (measured 100x slower)."""
    n = keys.shape[-1]
    idx = jnp.broadcast_to(jnp.arange(n, dtype=jnp.int32), keys.shape)
    out = jnp.put_along_axis(jnp.zeros(keys.shape, jnp.int32), ranks(keys), idx, axis=-1,
                             inplace=False)
    return out[..., : k or n]


def sub_seed(seed: jax.Array, salt: int, t: jax.Array | int = 0) -> jax.Array:
    """An independent child seed (e.g. one per inner try)."""
    return bits(seed, salt, t, 1)[0]
