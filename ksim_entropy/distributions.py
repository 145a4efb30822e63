"""Randomization distributions that know their own entropy, with widths that are traced arrays.

A distribution is a frozen description (family, nominal centre, bounds at full width) plus a *width scale*
``w ≥ 0`` passed at call time as a JAX array. `w` stretches the range about the centre, so changing it while
training runs never recompiles a jitted step:

- `Uniform(low, high)`: U(c − w·(c − low), c + w·(high − c)), c = `center` (default the midpoint). The maximum-
  entropy distribution on a bounded interval. H = log(width) nats.
- `LogUniform(low, high)`: log x ~ U(log c − w·(log c − log low), log c + w·(log high − log c)), c the geometric
  centre by default; for strictly positive scale factors. H = log(log(b/a)) + (log a + log b)/2 nats.
- `TruncatedNormal(mean, std, low, high)`: N(mean, (w·std)²) truncated to [mean − w·(mean − low), mean + w·(high −
  mean)]. H = log(√(2πe) σ Z) + (α φ(α) − β φ(β)) / (2Z), α = (a − μ)/σ, β = (b − μ)/σ, Z = Φ(β) − Φ(α).

All quantities are per dimension; a distribution may be vector-valued (one entry per joint, body, ...). Entropies
are differential entropies in nats. `npd` is OpenAI ADR's figure (arXiv 1910.07113): the mean of log(range width)
over dimensions; `normalized_npd` divides each width by a reference scale (|centre| for additive parameters, 1 for
unitless scale factors, or an explicit `reference`) so that runs and robots with different units compare.

`Distribution.concatenate` puts several distributions side by side as one vector distribution; parts of one class
merge into one instance, so a set of randomized parameters is drawn and measured with a few vector operations
instead of a few per parameter (each op is compile time in a jitted training step).
"""

import math
import operator
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar

import attrs
import jax
import jax.numpy as jnp
import jax.scipy.special as jsp
import numpy as np
from jaxtyping import Array, ArrayLike, PRNGKeyArray

__all__ = ["Concatenated", "Distribution", "LogUniform", "TruncatedNormal", "Uniform", "npd"]

_SQRT_2PI_E = math.sqrt(2.0 * math.pi * math.e)


def _as_tuple(value: float | Sequence[float]) -> tuple[float, ...]:
    return tuple(float(v) for v in np.atleast_1d(np.asarray(value, dtype=float)).ravel())


def _broadcast(name: str, *values: tuple[float, ...]) -> list[np.ndarray]:
    try:
        arrays = np.broadcast_arrays(*(np.asarray(v, dtype=float) for v in values))
    except ValueError as err:
        raise ValueError(f"{name}: parameter lengths do not match: {[len(v) for v in values]}") from err
    return [np.asarray(a) for a in arrays]


def _f32(a: np.ndarray) -> Array:
    return jnp.asarray(a, dtype=jnp.float32)


def _stacked(dists: Sequence["Distribution"], field: Callable[["Distribution"], ArrayLike]) -> np.ndarray:
    """One per-dimension field of several 1-D distributions, each broadcast to its shape, end to end."""
    return np.concatenate([np.broadcast_to(np.asarray(field(d), dtype=float), d.shape) for d in dists])


def _reference(name: str, reference: tuple[float, ...] | None, unitless: bool, center: np.ndarray) -> np.ndarray:
    """Reference scale per dimension: explicit, 1 (unitless), or |centre| (1 where the centre is 0)."""
    if reference is not None:
        return _broadcast(name, reference, center)[0]
    if unitless:
        return np.ones(center.shape)
    c = np.abs(center)
    return np.where(c > 0, c, 1.0)


def _check_reference(name: str, reference: tuple[float, ...] | None, shape: tuple[int, ...]) -> None:
    if reference is None:
        return
    ref = np.asarray(reference, dtype=float)
    if ref.size not in (1, math.prod(shape)) or not np.isfinite(ref).all() or np.any(ref <= 0):
        raise ValueError(f"{name}: reference must be finite, > 0 and of length 1 or {shape[0]}, got {ref.tolist()}")


def _check_width(width: ArrayLike, shape: tuple[int, ...]) -> Array:
    width = jnp.asarray(width, dtype=jnp.float32)
    if width.ndim > 1 or (width.ndim == 1 and width.shape != shape and width.shape != (1,)):
        raise ValueError(f"width scale must be a scalar or have shape {shape}, got {width.shape}")
    return jnp.broadcast_to(width, shape)


@attrs.define(frozen=True, kw_only=True)
class Distribution(ABC):
    """A bounded (or truncated) per-dimension distribution whose spread is scaled by a traced width `w`."""

    @property
    @abstractmethod
    def shape(self) -> tuple[int, ...]:
        """Number of dimensions, as an array shape."""

    @abstractmethod
    def bounds(self, width: ArrayLike = 1.0) -> tuple[Array, Array]:
        """Support [low, high] at width scale `width` (per dimension)."""

    @abstractmethod
    def quantile(self, u: ArrayLike, width: ArrayLike = 1.0) -> Array:
        """Inverse CDF at unit variates `u` ∈ [0, 1) of shape (..., *shape): U(0, 1) variates map to this distribution.

        Drawing many parameters from one `jax.random.uniform` call and mapping each slice through its `quantile`
        keeps a jitted step small: every separate random draw is a separate threefry hash for XLA to compile.
        """

    def sample(self, rng: PRNGKeyArray, width: ArrayLike = 1.0, batch_shape: tuple[int, ...] = ()) -> Array:
        """Draw values of shape batch_shape + shape."""
        return self.quantile(jax.random.uniform(rng, batch_shape + self.shape), width)

    @abstractmethod
    def entropy(self, width: ArrayLike = 1.0) -> Array:
        """Differential entropy per dimension (nats), closed form."""

    @abstractmethod
    def reference_scale(self) -> np.ndarray:
        """Scale that makes widths unit-free for `normalized_npd` (|centre|, or 1 for scale factors)."""

    def npd(self, width: ArrayLike = 1.0) -> Array:
        """ADR nats per dimension: mean over dimensions of log(high − low)."""
        low, high = self.bounds(width)
        return jnp.mean(jnp.log(high - low))

    def normalized_npd(self, width: ArrayLike = 1.0) -> Array:
        """Mean over dimensions of log((high − low) / reference scale): comparable across units and robots."""
        low, high = self.bounds(width)
        return jnp.mean(jnp.log((high - low) / jnp.asarray(self.reference_scale(), dtype=jnp.float32)))

    @classmethod
    def concatenate(cls, dists: Sequence["Distribution"]) -> "Distribution":
        """One 1-D distribution whose dimensions are those of `dists`, end to end.

        Per dimension it gives the parts' bounds, quantiles, entropies and reference scales. Called on a class
        whose parts are all exactly that class, it merges them into one instance of it; otherwise (mixed
        classes, subclasses) it returns a `Concatenated`, which evaluates each part on its own block.
        """
        dists = tuple(dists)
        if not dists:
            raise ValueError("concatenate needs at least one distribution")
        if any(len(d.shape) != 1 for d in dists):
            raise ValueError(f"concatenate needs 1-D distributions, got shapes {[d.shape for d in dists]}")
        if len(dists) == 1:
            return dists[0]
        merged = cls._merge(dists) if all(type(d) is cls for d in dists) else None
        return Concatenated(parts=dists) if merged is None else merged

    # Constructor arguments that `concatenate` stacks, each read per part by a getter (resolving defaults such as a
    # midpoint centre); a class without them is not merged but wrapped in a `Concatenated`.
    _per_dimension: ClassVar[Mapping[str, Callable[[Any], ArrayLike]]] = {}

    @classmethod
    def _merge(cls, dists: tuple["Distribution", ...]) -> "Distribution | None":
        """`dists` (all of exactly this class) as one instance of it; None if the class cannot merge."""
        if not cls._per_dimension:
            return None
        return cls(**{name: _stacked(dists, get) for name, get in cls._per_dimension.items()})


def _checked_interval(name: str, low: np.ndarray, high: np.ndarray, center: np.ndarray) -> None:
    if not (np.isfinite(low).all() and np.isfinite(high).all() and np.isfinite(center).all()):
        raise ValueError(f"{name}: bounds must be finite, got low={low.tolist()}, high={high.tolist()}")
    if np.any(low >= high):
        raise ValueError(f"{name}: need low < high, got low={low.tolist()}, high={high.tolist()}")
    if np.any(center < low) or np.any(center > high):
        raise ValueError(f"{name}: centre {center.tolist()} outside [{low.tolist()}, {high.tolist()}]")


@attrs.define(frozen=True, kw_only=True)
class Uniform(Distribution):
    """U(low, high) at width 1, stretched about `center` (default: midpoint) by the width scale."""

    low: tuple[float, ...] = attrs.field(converter=_as_tuple)
    high: tuple[float, ...] = attrs.field(converter=_as_tuple)
    center: tuple[float, ...] | None = attrs.field(default=None, converter=attrs.converters.optional(_as_tuple))
    unitless: bool = attrs.field(default=False)
    reference: tuple[float, ...] | None = attrs.field(default=None, converter=attrs.converters.optional(_as_tuple))

    def __attrs_post_init__(self) -> None:
        low, high = _broadcast("Uniform", self.low, self.high)
        _checked_interval("Uniform", low, high, self._center_np())
        _check_reference("Uniform", self.reference, self.shape)

    def _center_np(self) -> np.ndarray:
        low, high = _broadcast("Uniform", self.low, self.high)
        return (low + high) / 2.0 if self.center is None else _broadcast("Uniform", self.center, low)[0]

    @property
    def shape(self) -> tuple[int, ...]:
        return _broadcast("Uniform", self.low, self.high)[0].shape

    def bounds(self, width: ArrayLike = 1.0) -> tuple[Array, Array]:
        w = _check_width(width, self.shape)
        low, high = _broadcast("Uniform", self.low, self.high)
        c = self._center_np()
        return _f32(c) - w * _f32(c - low), _f32(c) + w * _f32(high - c)

    def quantile(self, u: ArrayLike, width: ArrayLike = 1.0) -> Array:
        low, high = self.bounds(width)
        return low + jnp.asarray(u) * (high - low)

    def entropy(self, width: ArrayLike = 1.0) -> Array:
        low, high = self.bounds(width)
        return jnp.log(high - low)

    def reference_scale(self) -> np.ndarray:
        return _reference("Uniform", self.reference, self.unitless, self._center_np())

    _per_dimension: ClassVar[Mapping[str, Callable[[Any], ArrayLike]]] = {
        "low": operator.attrgetter("low"),
        "high": operator.attrgetter("high"),
        "center": lambda d: d._center_np(),
        "reference": lambda d: d.reference_scale(),
    }


@attrs.define(frozen=True, kw_only=True)
class LogUniform(Distribution):
    """log-uniform on [low, high] (low > 0) at width 1, stretched in log space about `center` (geometric centre)."""

    low: tuple[float, ...] = attrs.field(converter=_as_tuple)
    high: tuple[float, ...] = attrs.field(converter=_as_tuple)
    center: tuple[float, ...] | None = attrs.field(default=None, converter=attrs.converters.optional(_as_tuple))

    def __attrs_post_init__(self) -> None:
        low, high = _broadcast("LogUniform", self.low, self.high)
        if np.any(low <= 0):
            raise ValueError(f"LogUniform: need low > 0, got {low.tolist()}")
        _checked_interval("LogUniform", low, high, self._center_np())

    def _center_np(self) -> np.ndarray:
        low, high = _broadcast("LogUniform", self.low, self.high)
        return np.sqrt(low * high) if self.center is None else _broadcast("LogUniform", self.center, low)[0]

    @property
    def shape(self) -> tuple[int, ...]:
        return _broadcast("LogUniform", self.low, self.high)[0].shape

    def _log_bounds(self, width: ArrayLike) -> tuple[Array, Array]:
        w = _check_width(width, self.shape)
        low, high = (np.log(a) for a in _broadcast("LogUniform", self.low, self.high))
        c = np.log(self._center_np())
        return _f32(c) - w * _f32(c - low), _f32(c) + w * _f32(high - c)

    def bounds(self, width: ArrayLike = 1.0) -> tuple[Array, Array]:
        log_low, log_high = self._log_bounds(width)
        return jnp.exp(log_low), jnp.exp(log_high)

    def quantile(self, u: ArrayLike, width: ArrayLike = 1.0) -> Array:
        log_low, log_high = self._log_bounds(width)
        return jnp.exp(log_low + jnp.asarray(u) * (log_high - log_low))

    def entropy(self, width: ArrayLike = 1.0) -> Array:
        log_low, log_high = self._log_bounds(width)
        return jnp.log(log_high - log_low) + (log_low + log_high) / 2.0

    def reference_scale(self) -> np.ndarray:
        return np.ones(self.shape)  # used for positive scale factors, which are unitless

    _per_dimension: ClassVar[Mapping[str, Callable[[Any], ArrayLike]]] = {
        "low": operator.attrgetter("low"),
        "high": operator.attrgetter("high"),
        "center": lambda d: d._center_np(),
    }


@attrs.define(frozen=True, kw_only=True)
class TruncatedNormal(Distribution):
    """N(mean, (w·std)²) truncated to [mean − w·(mean − low), mean + w·(high − mean)]."""

    mean: tuple[float, ...] = attrs.field(converter=_as_tuple)
    std: tuple[float, ...] = attrs.field(converter=_as_tuple)
    low: tuple[float, ...] = attrs.field(converter=_as_tuple)
    high: tuple[float, ...] = attrs.field(converter=_as_tuple)
    unitless: bool = attrs.field(default=False)
    reference: tuple[float, ...] | None = attrs.field(default=None, converter=attrs.converters.optional(_as_tuple))

    def __attrs_post_init__(self) -> None:
        mean, std, low, high = _broadcast("TruncatedNormal", self.mean, self.std, self.low, self.high)
        if np.any(std <= 0) or not np.isfinite(std).all():
            raise ValueError(f"TruncatedNormal: need finite std > 0, got {std.tolist()}")
        _checked_interval("TruncatedNormal", low, high, mean)
        _check_reference("TruncatedNormal", self.reference, self.shape)

    def _params(self) -> list[np.ndarray]:
        return _broadcast("TruncatedNormal", self.mean, self.std, self.low, self.high)

    @property
    def shape(self) -> tuple[int, ...]:
        return _broadcast("TruncatedNormal", self.mean, self.std, self.low, self.high)[0].shape

    def bounds(self, width: ArrayLike = 1.0) -> tuple[Array, Array]:
        w = _check_width(width, self.shape)
        mean, _, low, high = self._params()
        return _f32(mean) - w * _f32(mean - low), _f32(mean) + w * _f32(high - mean)

    def _standardized(self, width: ArrayLike) -> tuple[Array, Array, Array, Array]:
        w = _check_width(width, self.shape)
        mean, std, low, high = self._params()
        # At w = 0 the distribution is a point mass; keep the algebra finite (entropy → −inf is not produced).
        sigma = jnp.maximum(w * _f32(std), 1e-12)
        return _f32(mean), sigma, _f32((low - mean) / std), _f32((high - mean) / std)  # α, β do not depend on w

    def quantile(self, u: ArrayLike, width: ArrayLike = 1.0) -> Array:
        # Standard-normal quantile of Φ(α) + u·(Φ(β) − Φ(α)), in erf form (erf(x/√2) = 2Φ(x) − 1), clipped to [α, β].
        mean, sigma, alpha, beta = self._standardized(width)
        erf_a, erf_b = jsp.erf(alpha / math.sqrt(2.0)), jsp.erf(beta / math.sqrt(2.0))
        z = math.sqrt(2.0) * jsp.erfinv(erf_a + jnp.asarray(u) * (erf_b - erf_a))
        return mean + sigma * jnp.clip(z, alpha, beta)

    def entropy(self, width: ArrayLike = 1.0) -> Array:
        _, sigma, alpha, beta = self._standardized(width)
        z = jsp.ndtr(beta) - jsp.ndtr(alpha)
        phi_a, phi_b = jnp.exp(-0.5 * alpha**2), jnp.exp(-0.5 * beta**2)
        phi_a, phi_b = phi_a / math.sqrt(2 * math.pi), phi_b / math.sqrt(2 * math.pi)
        return jnp.log(_SQRT_2PI_E * sigma * z) + (alpha * phi_a - beta * phi_b) / (2.0 * z)

    def reference_scale(self) -> np.ndarray:
        return _reference("TruncatedNormal", self.reference, self.unitless, self._params()[0])

    _per_dimension: ClassVar[Mapping[str, Callable[[Any], ArrayLike]]] = {
        **{name: operator.attrgetter(name) for name in ("mean", "std", "low", "high")},
        "reference": lambda d: d.reference_scale(),
    }


@attrs.define(frozen=True, kw_only=True)
class Concatenated(Distribution):
    """Several 1-D distributions end to end, each evaluated on its own block of dimensions (and widths)."""

    parts: tuple[Distribution, ...] = attrs.field(converter=tuple)

    def __attrs_post_init__(self) -> None:
        if not self.parts or any(len(p.shape) != 1 for p in self.parts):
            raise ValueError(f"Concatenated needs 1-D parts, got shapes {[p.shape for p in self.parts]}")

    @property
    def shape(self) -> tuple[int, ...]:
        return (sum(p.shape[0] for p in self.parts),)

    def _blocks(self) -> list[slice]:
        ends = np.cumsum([p.shape[0] for p in self.parts]).tolist()
        return [slice(a, b) for a, b in zip([0, *ends[:-1]], ends, strict=True)]

    def bounds(self, width: ArrayLike = 1.0) -> tuple[Array, Array]:
        w = _check_width(width, self.shape)
        lows, highs = zip(*(p.bounds(w[b]) for p, b in zip(self.parts, self._blocks(), strict=True)), strict=True)
        return jnp.concatenate(lows), jnp.concatenate(highs)

    def quantile(self, u: ArrayLike, width: ArrayLike = 1.0) -> Array:
        u, w = jnp.asarray(u), _check_width(width, self.shape)
        blocks = zip(self.parts, self._blocks(), strict=True)
        return jnp.concatenate([p.quantile(u[..., b], w[b]) for p, b in blocks], axis=-1)

    def entropy(self, width: ArrayLike = 1.0) -> Array:
        w = _check_width(width, self.shape)
        return jnp.concatenate([p.entropy(w[b]) for p, b in zip(self.parts, self._blocks(), strict=True)])

    def reference_scale(self) -> np.ndarray:
        return np.concatenate([np.broadcast_to(p.reference_scale(), p.shape) for p in self.parts])


def npd(distributions: Sequence[Distribution], widths: Sequence[ArrayLike] | None = None) -> Array:
    """ADR nats per dimension over several distributions: Σ log(range widths) / total number of dimensions."""
    widths = [1.0] * len(distributions) if widths is None else list(widths)
    if len(widths) != len(distributions):
        raise ValueError(f"got {len(widths)} widths for {len(distributions)} distributions")
    total = jnp.zeros((), dtype=jnp.float32)
    dims = 0
    for dist, w in zip(distributions, widths, strict=True):
        low, high = dist.bounds(w)
        total = total + jnp.sum(jnp.log(high - low))
        dims += int(np.prod(dist.shape))
    return total / dims
