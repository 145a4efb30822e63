"""Closed-form entropies against scipy and Monte Carlo; traced widths change without recompiling."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from ksim_entropy.distributions import Concatenated, LogUniform, TruncatedNormal, Uniform, npd

WIDTHS = (1.0, 0.5, 0.1, 1.7)


@pytest.mark.parametrize("w", WIDTHS)
def test_uniform_entropy_and_support(w):
    dist = Uniform(low=[0.5, -0.2, 10.0], high=[2.0, 0.2, 30.0])
    low, high = (np.asarray(b) for b in dist.bounds(w))
    expected = [stats.uniform(loc=lo, scale=hi - lo).entropy() for lo, hi in zip(low, high, strict=True)]
    np.testing.assert_allclose(dist.entropy(w), expected, rtol=1e-6)
    x = np.asarray(dist.sample(jax.random.PRNGKey(0), w, (20000,)))
    assert (x >= low).all() and (x <= high).all()
    # Bounds stretch about the midpoint: centre unchanged, width scales linearly.
    np.testing.assert_allclose((low + high) / 2, [1.25, 0.0, 20.0], rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(high - low, w * np.array([1.5, 0.4, 20.0]), rtol=1e-6)


def test_uniform_about_an_off_centre_nominal():
    dist = Uniform(low=0.4, high=1.0, center=0.7)
    np.testing.assert_allclose(dist.bounds(0.5), ([0.55], [0.85]), rtol=1e-6)
    lopsided = Uniform(low=0.9, high=1.5, center=1.0)
    np.testing.assert_allclose(lopsided.bounds(2.0), ([0.8], [2.0]), rtol=1e-6)


@pytest.mark.parametrize("w", WIDTHS)
def test_log_uniform_entropy(w):
    dist = LogUniform(low=[0.5, 0.1], high=[2.0, 10.0])
    low, high = (np.asarray(b, dtype=float) for b in dist.bounds(w))
    expected = [stats.loguniform(lo, hi).entropy() for lo, hi in zip(low, high, strict=True)]
    np.testing.assert_allclose(dist.entropy(w), expected, rtol=1e-5, atol=1e-6)
    x = np.asarray(dist.sample(jax.random.PRNGKey(1), w, (200000,)), dtype=float)
    # Monte Carlo: H = -E[log p(x)], p(x) = 1 / (x log(b/a)).
    mc = np.mean(np.log(x) + np.log(np.log(high / low)), axis=0)
    np.testing.assert_allclose(mc, expected, atol=0.02)


@pytest.mark.parametrize("w", WIDTHS)
def test_truncated_normal_entropy(w):
    dist = TruncatedNormal(mean=[1.0, 0.0], std=[0.1, 2.0], low=[0.8, -1.0], high=[1.3, 3.0])
    low, high = (np.asarray(b, dtype=float) for b in dist.bounds(w))
    mean, std = np.array([1.0, 0.0]), w * np.array([0.1, 2.0])
    oracle = [
        stats.truncnorm((lo - m) / s, (hi - m) / s, loc=m, scale=s)
        for lo, hi, m, s in zip(low, high, mean, std, strict=True)
    ]
    np.testing.assert_allclose(dist.entropy(w), [o.entropy() for o in oracle], rtol=1e-4, atol=1e-5)
    x = np.asarray(dist.sample(jax.random.PRNGKey(2), w, (200000,)), dtype=float)
    assert (x >= low - 1e-6).all() and (x <= high + 1e-6).all()
    mc = np.array([-np.mean(o.logpdf(x[:, i])) for i, o in enumerate(oracle)])
    np.testing.assert_allclose(mc, [o.entropy() for o in oracle], atol=0.02)
    # Moments match the truncated normal (catches a wrong sampler, not just a wrong formula).
    np.testing.assert_allclose(x.mean(axis=0), [o.mean() for o in oracle], atol=0.01 * std.max() + 1e-3)


def test_uniform_is_the_maximum_entropy_choice_on_a_range():
    u = Uniform(low=-1.0, high=1.0)
    t = TruncatedNormal(mean=0.0, std=0.5, low=-1.0, high=1.0)
    assert float(u.entropy()[0]) > float(t.entropy()[0])
    assert float(u.entropy()[0]) == pytest.approx(math.log(2.0))


def test_npd_matches_adr_definition():
    dists = [Uniform(low=[0.9, 0.9], high=[1.1, 1.1], unitless=True), Uniform(low=-1.0, high=1.0)]
    widths = [1.0, 0.5]
    expected = (2 * math.log(0.2) + math.log(1.0)) / 3
    assert float(npd(dists, widths)) == pytest.approx(expected, rel=1e-5)
    # Normalised npd of unitless factors equals the raw one; additive ones are divided by |centre|.
    assert float(dists[0].normalized_npd()) == pytest.approx(math.log(0.2), rel=1e-5)
    mass = Uniform(low=9.0, high=11.0)
    assert float(mass.normalized_npd()) == pytest.approx(math.log(2.0 / 10.0), rel=1e-5)


def test_width_change_does_not_recompile():
    dist = Uniform(low=[0.5] * 20, high=[1.5] * 20)

    @jax.jit
    def draw(rng, width):
        return dist.sample(rng, width, (64,)), dist.entropy(width).sum()

    rng = jax.random.PRNGKey(0)
    for w in (1.0, 0.5, 0.25, 2.0):
        x, h = draw(rng, jnp.asarray(w, dtype=jnp.float32))
        assert float(h) == pytest.approx(20 * math.log(w), abs=1e-4)
        assert float(x.max() - x.min()) <= w + 1e-6
    for w in (np.full(20, 0.3, np.float32), np.linspace(0.1, 1.0, 20, dtype=np.float32)):
        draw(rng, jnp.asarray(w))
    assert draw._cache_size() == 2  # one trace for the scalar width, one for the per-dimension width


@pytest.mark.parametrize("w", (1.0, 0.4))
def test_quantile_is_the_inverse_cdf(w):
    """`quantile` against scipy's ppf at the same width (every sampler maps U(0, 1) variates through it)."""
    u = np.array([1e-4, 0.02, 0.25, 0.5, 0.75, 0.98, 0.9999], dtype=np.float32)[:, None]
    uniform = Uniform(low=[0.5, -0.2], high=[2.0, 0.2])
    low, high = (np.asarray(b, dtype=float) for b in uniform.bounds(w))
    np.testing.assert_allclose(uniform.quantile(u, w), stats.uniform(low, high - low).ppf(u), rtol=1e-6, atol=1e-7)
    log_uniform = LogUniform(low=[0.5, 0.1], high=[2.0, 10.0])
    low, high = (np.asarray(b, dtype=float) for b in log_uniform.bounds(w))
    np.testing.assert_allclose(log_uniform.quantile(u, w), stats.loguniform(low, high).ppf(u), rtol=2e-5)
    normal = TruncatedNormal(mean=[1.0, 0.0], std=[0.1, 2.0], low=[0.8, -1.0], high=[1.3, 3.0])
    low, high = (np.asarray(b, dtype=float) for b in normal.bounds(w))
    mean, std = np.array([1.0, 0.0]), w * np.array([0.1, 2.0])
    oracle = stats.truncnorm((low - mean) / std, (high - mean) / std, loc=mean, scale=std).ppf(u)
    np.testing.assert_allclose(normal.quantile(u, w), oracle, rtol=1e-4, atol=1e-4 * std.max())


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: Uniform(low=1.0, high=1.0), "low < high"),
        (lambda: Uniform(low=[0.0, 0.0], high=[1.0, 1.0, 1.0]), "lengths do not match"),
        (lambda: Uniform(low=0.0, high=1.0, center=2.0), "outside"),
        (lambda: Uniform(low=0.0, high=float("nan")), "finite"),
        (lambda: LogUniform(low=0.0, high=1.0), "low > 0"),
        (lambda: TruncatedNormal(mean=0.0, std=-1.0, low=-1.0, high=1.0), "std > 0"),
        (lambda: TruncatedNormal(mean=2.0, std=1.0, low=-1.0, high=1.0), "outside"),
    ],
)
def test_invalid_distributions_are_rejected(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_width_of_wrong_shape_is_rejected():
    with pytest.raises(ValueError, match="width scale"):
        Uniform(low=[0.0, 0.0], high=[1.0, 1.0]).sample(jax.random.PRNGKey(0), jnp.ones(3))


class _WiderUniform(Uniform):
    """A subclass: `concatenate` must not merge it into a plain `Uniform` (it would lose the override)."""

    def quantile(self, u, width=1.0):
        return super().quantile(u, 1.5 * jnp.asarray(width))


@pytest.mark.parametrize(
    ("parts", "merged_class"),
    [
        (
            [
                Uniform(low=[0.5, -0.2], high=[2.0, 0.2]),
                Uniform(low=0.8, high=[1.2, 1.1, 1.3], center=1.0, unitless=True),
                Uniform(low=-3.0, high=5.0, reference=2.0),
            ],
            Uniform,
        ),
        ([LogUniform(low=[0.5, 0.1], high=[2.0, 10.0]), LogUniform(low=0.9, high=1.2, center=1.0)], LogUniform),
        (
            [
                TruncatedNormal(mean=[1.0, 0.0], std=[0.1, 2.0], low=[0.8, -1.0], high=[1.3, 3.0], unitless=True),
                TruncatedNormal(mean=0.3, std=0.2, low=-0.5, high=1.0),
            ],
            TruncatedNormal,
        ),
        ([Uniform(low=-1.0, high=2.0), LogUniform(low=0.5, high=2.0), Uniform(low=0.0, high=1.0)], Concatenated),
        ([Uniform(low=-1.0, high=2.0), _WiderUniform(low=[0.0, 1.0], high=[1.0, 4.0])], Concatenated),
    ],
)
def test_concatenate_evaluates_every_dimension_like_its_part(parts, merged_class):
    """Bounds, quantiles, entropies, reference scales and npd of the concatenation, against each part on its own."""
    cls = type(parts[0])
    merged = cls.concatenate(parts)
    assert type(merged) is merged_class
    sizes = [p.shape[0] for p in parts]
    assert merged.shape == (sum(sizes),)
    part_widths = [np.linspace(0.3, 1.0, n) for n in sizes]  # a different width on every dimension
    w = np.concatenate(part_widths)
    u = np.random.default_rng(0).uniform(size=(5, sum(sizes))).astype(np.float32)
    ends = np.cumsum(sizes)
    cut = lambda x: np.split(np.asarray(x), ends[:-1], axis=-1)  # noqa: E731
    for part, pw, pu, low, high, q, h, ref in zip(
        parts,
        part_widths,
        cut(u),
        *(cut(b) for b in merged.bounds(w)),
        cut(merged.quantile(u, w)),
        cut(merged.entropy(w)),
        cut(merged.reference_scale()),
        strict=True,
    ):
        np.testing.assert_allclose(low, part.bounds(pw)[0], rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(high, part.bounds(pw)[1], rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(q, part.quantile(pu, pw), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(h, part.entropy(pw), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(ref, np.broadcast_to(part.reference_scale(), part.shape), rtol=1e-12)
    expected = sum(float(p.normalized_npd(pw)) * n for p, pw, n in zip(parts, part_widths, sizes, strict=True))
    assert float(merged.normalized_npd(w)) == pytest.approx(expected / sum(sizes), rel=1e-5)
    assert cls.concatenate(parts[:1]) is parts[0]


def test_concatenate_needs_a_distribution():
    with pytest.raises(ValueError, match="at least one"):
        Uniform.concatenate([])


def test_explicit_reference_scale():
    """normalized npd = log(range / reference): a 4 m range against a 2 m reference is log 2 nats per dimension."""
    dist = Uniform(low=-1.0, high=3.0, center=0.0, reference=2.0)
    assert float(dist.normalized_npd()) == pytest.approx(math.log(2.0), rel=1e-6)
    assert float(dist.npd()) == pytest.approx(math.log(4.0), rel=1e-6)
    for bad in (0.0, -1.0, float("nan"), [1.0, 2.0]):
        with pytest.raises(ValueError, match="reference must be"):
            Uniform(low=[0.0, 0.0, 0.0], high=1.0, reference=bad)
    with pytest.raises(ValueError, match="reference must be"):
        TruncatedNormal(mean=0.0, std=1.0, low=-1.0, high=1.0, reference=0.0)
