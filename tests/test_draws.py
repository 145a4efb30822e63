"""Draw helpers: exact end points, uniformity (scipy's KS test), independence of key and variates, one threefry
for large draws; small and reset draws hashed from key words without threefry."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats

from ksim_entropy.draws import (
    hashed_key_and_uniforms,
    hashed_uniforms,
    key_and_uniforms,
    standard_normal,
    uniform_int,
    uniforms,
    unit_uniform,
)


def test_unit_uniform_maps_words_to_cell_midpoints_strictly_inside_the_unit_interval():
    words = np.array([0, 511, 512, 2**31, 2**32 - 1], dtype=np.uint32)  # 511 and 0 share a cell (low 9 bits dropped)
    expected = (np.array([0, 0, 1, 2**22, 2**23 - 1], dtype=np.float64) + 0.5) / 2**23
    u = np.asarray(unit_uniform(jnp.asarray(words)))
    assert u.dtype == np.float32
    np.testing.assert_array_equal(u.astype(np.float64), expected)  # exact in float32
    assert 0.0 < u.min() and u.max() < 1.0


@pytest.mark.parametrize("draw", [key_and_uniforms, hashed_key_and_uniforms], ids=["threefry", "hashed"])
@pytest.mark.parametrize("make_key", [jax.random.PRNGKey, jax.random.key], ids=["raw", "typed"])
def test_key_and_uniforms_are_uniform_and_independent(make_key, draw):
    """From consecutive seeds (PRNGKey(s) = (0, s), the worst case for a hash of the words) as from any key."""
    rngs = jax.vmap(make_key)(jnp.arange(4000))
    keys, u = jax.vmap(lambda k: draw(k, 5))(rngs)
    assert u.shape == (4000, 5) and keys.dtype == rngs.dtype and keys.shape == rngs.shape
    flat = np.asarray(u, dtype=np.float64).ravel()
    assert scipy.stats.kstest(flat, "uniform").pvalue > 1e-3
    # the returned key draws afresh: its variates are uncorrelated with the ones returned beside it
    later = np.asarray(jax.vmap(lambda k: jax.random.uniform(k))(keys), dtype=np.float64)
    bound = 4.0 / np.sqrt(len(later))  # 4 standard errors of a correlation coefficient
    for j in range(5):
        assert abs(np.corrcoef(later, np.asarray(u[:, j]))[0, 1]) < bound
    assert abs(np.corrcoef(np.asarray(u[:, 0]), np.asarray(u[:, 1]))[0, 1]) < bound
    data = jax.random.key_data if jnp.issubdtype(rngs.dtype, jax.dtypes.prng_key) else np.asarray
    assert not (np.asarray(data(keys)) == np.asarray(data(rngs))).all(axis=-1).any()  # a fresh key for every rng


def test_one_hash_per_call_and_none_for_zero_variates():
    rng = jax.random.PRNGKey(0)
    text = str(jax.make_jaxpr(lambda k: key_and_uniforms(k, 7))(rng))
    assert text.count("random_split") == 1 and "random_bits" not in text
    key, u = key_and_uniforms(rng, 0)
    assert key is rng and u.shape == (0,)
    assert "random" not in str(jax.make_jaxpr(lambda k: key_and_uniforms(k, 0))(rng))
    assert "random" not in str(jax.make_jaxpr(lambda k: uniforms(k, (3, 0)))(rng))
    with pytest.raises(ValueError, match="num must be >= 0"):
        key_and_uniforms(rng, -1)


def test_hashed_key_and_uniforms_call_no_threefry_and_extend_hashed_uniforms():
    rng = jax.random.PRNGKey(5)
    assert "random" not in str(jax.make_jaxpr(lambda k: hashed_key_and_uniforms(k, 7))(rng))
    key, u = hashed_key_and_uniforms(rng, 7)
    np.testing.assert_array_equal(u, hashed_uniforms(rng, 7))  # the variates are the first 7 hashed ones
    assert key.shape == (2,) and key.dtype == jnp.uint32 and not (np.asarray(key) == np.asarray(rng)).all()
    typed_key, typed_u = hashed_key_and_uniforms(jax.random.wrap_key_data(rng), 7)
    np.testing.assert_array_equal(jax.random.key_data(typed_key), key)  # typed and raw keys agree
    np.testing.assert_array_equal(typed_u, u)
    same, empty = hashed_key_and_uniforms(rng, 0)
    assert same is rng and empty.shape == (0,)
    with pytest.raises(ValueError, match="num must be >= 0"):
        hashed_key_and_uniforms(rng, -1)


def test_uniforms_follow_scipys_uniform_and_uniform_int_covers_every_integer_equally():
    u = np.asarray(uniforms(jax.random.PRNGKey(3), (200, 50)), dtype=np.float64)
    assert u.shape == (200, 50) and 0.0 < u.min() and u.max() < 1.0
    assert scipy.stats.kstest(u.ravel(), "uniform").pvalue > 1e-3
    ints = np.asarray(uniform_int(jnp.asarray(u.ravel()), 2, 6))
    counts = np.bincount(ints, minlength=7)[2:]
    assert ints.min() == 2 and ints.max() == 6
    assert scipy.stats.chisquare(counts).pvalue > 1e-3
    # the end cells: u just above 0 and just below 1 land on the end integers
    np.testing.assert_array_equal(uniform_int(unit_uniform(jnp.array([0, 2**32 - 1], jnp.uint32)), 2, 6), [2, 6])


def test_hashed_uniforms_are_uniform_independent_and_hash_free():
    """Per-episode draws hashed from the key's words: uniform (KS) for split keys and for consecutive raw seeds
    (PRNGKey(s) = (0, s), the worst case for a hash of the words), uncorrelated across counters and with the key's
    own threefry variates, and no `jax.random` primitive in the jaxpr."""
    split = jax.random.split(jax.random.PRNGKey(7), 4000)
    seeds = jax.vmap(jax.random.PRNGKey)(jnp.arange(4000))
    bound = 4.0 / np.sqrt(4000)  # 4 standard errors of a correlation coefficient
    for keys in (split, seeds):
        u = np.asarray(jax.vmap(lambda k: hashed_uniforms(k, 6))(keys), dtype=np.float64)
        assert u.shape == (4000, 6) and 0.0 < u.min() and u.max() < 1.0
        for j in range(6):
            assert scipy.stats.kstest(u[:, j], "uniform").pvalue > 1e-3
        corr = np.corrcoef(u.T)[np.triu_indices(6, k=1)]
        assert np.abs(corr).max() < bound
        threefry = np.asarray(jax.vmap(lambda k: jax.random.uniform(k))(keys), dtype=np.float64)
        assert abs(np.corrcoef(threefry, u[:, 0])[0, 1]) < bound
    typed = np.asarray(hashed_uniforms(jax.random.wrap_key_data(split[0]), 3))
    np.testing.assert_array_equal(typed, np.asarray(hashed_uniforms(split[0], 3)))  # typed and raw keys agree
    assert "random" not in str(jax.make_jaxpr(lambda k: hashed_uniforms(k, 5))(split[0]))
    assert hashed_uniforms(split[0], 0).shape == (0,)
    with pytest.raises(ValueError, match="num must be >= 0"):
        hashed_uniforms(split[0], -1)


def test_standard_normal_is_scipys_inverse_normal_cdf_and_finite_at_the_end_cells():
    u = np.asarray(unit_uniform(jnp.asarray(np.linspace(0, 2**32 - 1, 4001).astype(np.uint32))), dtype=np.float64)
    z = np.asarray(standard_normal(jnp.asarray(u, dtype=jnp.float32)), dtype=np.float64)
    inner = (u > 1e-4) & (u < 1 - 1e-4)  # float32 erfinv loses relative precision as 2u - 1 nears ±1
    np.testing.assert_allclose(z[inner], scipy.stats.norm.ppf(u[inner]), rtol=1e-4, atol=1e-5)
    assert np.all(np.isfinite(z)) and z[0] < -5.0 and z[-1] > 5.0 and np.all(np.diff(z) >= 0)
    sample = np.asarray(standard_normal(hashed_uniforms(jax.random.PRNGKey(11), 20000)), dtype=np.float64)
    assert scipy.stats.kstest(sample, "norm").pvalue > 1e-3
