"""Random draws that cost the jitted step little to compile: a key for whoever needs one, plus U(0, 1) variates.

On CPU, JAX lowers every threefry hash (each `jax.random` split, uniform, normal, ... call) as a rolled while loop
that XLA compiles separately, so each extra draw in the jitted step adds compile time (issue 3's measurement: 174
such loops in one walk unroll made the compile 1.2× plain ksim's). Two ways around it, by size:

- small draws made every control or physics step (a sensor's noise, a push's onset, a wind gust, a delayed action's
  jitter) and every draw at an episode reset (ksim computes the reset branch of every carry on every step: its
  `lax.cond` on "done" becomes a select under vmap) hash the words of the key ksim hands the block (`hashed_uniforms`,
  `hashed_key_and_uniforms`) with murmur3's 32-bit finaliser (Appleby, MurmurHash3, public domain): a few fused
  integer ops and no loop. ksim's keys are threefry outputs already; the hash only spreads one into many variates.
- large draws (a whole physics parameter set, hundreds of variates feeding a dozen parameters) take one
  `jax.random.split` (`key_and_uniforms`): XLA fuses a hash into each consumer that reads it, so a big hashed draw
  would be copied a dozen times, while the threefry loop is compiled once.
Key data are uniform random words either way, which `unit_uniform` maps to floats.
"""

import math

import jax
import jax.numpy as jnp
import jax.scipy.special as jsp
from jaxtyping import Array, ArrayLike, PRNGKeyArray

__all__ = [
    "hashed_key_and_uniforms",
    "hashed_uniforms",
    "key_and_uniforms",
    "standard_normal",
    "uniform_int",
    "uniforms",
    "unit_uniform",
]


def unit_uniform(bits: Array) -> Array:
    """float32 variates strictly inside (0, 1) from uint32 random words: the midpoints of 2²³ equal cells.

    The top 23 bits pick the cell (the resolution of `jax.random.uniform`); the midpoint keeps 0 and 1 out, so an
    inverse CDF (erfinv, log) never sees an end point.
    """
    return ((jnp.asarray(bits, dtype=jnp.uint32) >> 9).astype(jnp.float32) + 0.5) * jnp.float32(2.0**-23)


def _check_num(num: int) -> None:
    if num < 0:
        raise ValueError(f"num must be >= 0 variates, got {num}")


def key_and_uniforms(rng: PRNGKeyArray, num: int) -> tuple[PRNGKeyArray, Array]:
    """(a fresh key, `num` U(0, 1) variates) from one threefry call; (rng itself, an empty array) when num is 0.

    The key and the variates come from distinct counters of the same hash, so they are independent; the variates
    are exactly uniform on the 2²³ cell midpoints of `unit_uniform`. Works for raw uint32[2] keys (ksim's) and typed
    keys alike. For large draws; see the module docstring.
    """
    _check_num(num)
    if num == 0:
        return rng, jnp.zeros((0,), dtype=jnp.float32)
    keys = jax.random.split(rng, 1 + math.ceil(num / 2))  # each key is two uint32 words
    words = jax.random.key_data(keys) if jnp.issubdtype(keys.dtype, jax.dtypes.prng_key) else keys
    return keys[0], unit_uniform(words[1:].reshape(-1)[:num])


def _mix32(x: Array) -> Array:
    """murmur3's fmix32: a bijection of uint32 in which every input bit flips each output bit with probability ~1/2."""
    x = x ^ (x >> 16)
    x = x * jnp.uint32(0x85EBCA6B)
    x = x ^ (x >> 13)
    x = x * jnp.uint32(0xC2B2AE35)
    return x ^ (x >> 16)


def _key_words(rng: PRNGKeyArray) -> Array:
    """A key's uint32 words (raw uint32[2] keys, ksim's, and typed keys alike)."""
    data = jax.random.key_data(rng) if jnp.issubdtype(rng.dtype, jax.dtypes.prng_key) else rng
    return jnp.asarray(data, dtype=jnp.uint32).reshape(-1)


def _hashed_words(rng: PRNGKeyArray, num: int) -> Array:
    """`num` uint32 words: word i is mix(mix(w1 ^ φ·(i + 1)) + w0) for key words (w0, w1), mix = murmur3's fmix32.

    φ = 0x9E3779B9 is the golden-ratio increment of splitmix; two rounds, so every word of the key reaches every bit,
    and consecutive seeds (PRNGKey(s) = (0, s)) give independent-looking words.
    """
    words = _key_words(rng)
    counter = (jnp.arange(1, num + 1, dtype=jnp.uint32) * jnp.uint32(0x9E3779B9)) ^ words[-1]
    return _mix32(_mix32(counter) + words[0])


def hashed_uniforms(rng: PRNGKeyArray, num: int) -> Array:
    """`num` U(0, 1) variates hashed from the key's words (`unit_uniform` of `_hashed_words`): no threefry.

    The key may still be used with `jax.random` (a threefry of it is unrelated to this hash of its words). Not for
    cryptography.
    """
    _check_num(num)
    if num == 0:
        return jnp.zeros((0,), dtype=jnp.float32)
    return unit_uniform(_hashed_words(rng, num))


def hashed_key_and_uniforms(rng: PRNGKeyArray, num: int) -> tuple[PRNGKeyArray, Array]:
    """(a fresh key, `num` U(0, 1) variates) hashed from the key's words, no threefry; (rng, empty) when num is 0.

    The variates are `hashed_uniforms(rng, num)`; the key is the next two hashed words (raw uint32[2] for a raw key,
    a typed key of the same implementation for a typed one). For small per-step draws; see the module docstring.
    """
    _check_num(num)
    if num == 0:
        return rng, jnp.zeros((0,), dtype=jnp.float32)
    words = _hashed_words(rng, num + 2)
    key = words[num:]
    if jnp.issubdtype(rng.dtype, jax.dtypes.prng_key):
        key = jax.random.wrap_key_data(key, impl=jax.random.key_impl(rng))
    return key, unit_uniform(words[:num])


def uniforms(rng: PRNGKeyArray, shape: int | tuple[int, ...]) -> Array:
    """U(0, 1) variates of `shape` (an int: a vector), as `unit_uniform` makes them; no draw when the shape is empty."""
    shape = (shape,) if isinstance(shape, int) else tuple(shape)
    if math.prod(shape) == 0:
        return jnp.zeros(shape, dtype=jnp.float32)
    return unit_uniform(jax.random.bits(rng, shape, dtype=jnp.uint32))


def standard_normal(u: ArrayLike) -> Array:
    """N(0, 1) variates from U(0, 1) variates `u` (any shape) by the inverse CDF, √2·erfinv(2u − 1).

    `unit_uniform`'s variates keep 0 and 1 out, so the result is finite (|z| < 5.5 in float32).
    """
    return math.sqrt(2.0) * jsp.erfinv(2.0 * jnp.asarray(u) - 1.0)


def uniform_int(u: ArrayLike, low: int, high: int) -> Array:
    """An int32 uniform on {low, ..., high} from a U(0, 1) variate `u` (any shape)."""
    return jnp.minimum(low + jnp.floor(jnp.asarray(u) * (high - low + 1)), high).astype(jnp.int32)
