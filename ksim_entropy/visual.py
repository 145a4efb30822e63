"""Visual domain randomization: per-episode photometric changes to camera images, with traced widths and entropy.

`ImageRandomization` holds one distribution (`ksim_entropy.distributions`) per change, each over a scalar drawn
once per episode, and applies them to float images in [0, 1] of shape (..., H, W, 3), in this order, clipping to
[0, 1] after each (a camera saturates; PIL does the same on 8-bit images):

1. brightness, a factor b: x ← b·x (PIL's `ImageEnhance.Brightness`);
2. contrast, a factor c: x ← m + c·(x − m), m the image's mean luma (PIL's `ImageEnhance.Contrast`);
3. saturation, a factor s: x ← L + s·(x − L), L the pixel's luma, ITU-R 601 (0.299 R + 0.587 G + 0.114 B;
   PIL's `ImageEnhance.Color`);
4. hue, a shift h in turns of the colour wheel: HSV's hue rotated by h (`colorsys`' HSV);
5. blur, a Gaussian of σ pixels: separable, truncated at a fixed radius (`blur_radius_px`, from the widest σ the
   randomization can draw), edges mirrored (scipy.ndimage's ``reflect``);
6. sensor noise, a standard deviation n: x ← x + n·z, z ~ N(0, 1) per pixel, channel and control step.

Widths work as for the physics ranges: every distribution's range is stretched about its centre by a width scale
that is a traced array (`Distribution.quantile(u, width)`), so a curriculum can schedule it without recompiling.
`RandomizedImage` (a ksim observation wrapper for any image-valued ksim observation) draws an episode's six unit
variates at reset and maps them through the distributions at every step at the current width: the fixed `width`,
or with `follow_curriculum`, `max_width` × ksim's curriculum level (this package's curricula set that level to the
physics randomization's mean width / max width). `entropy(width)` is the differential entropy of the six per-episode
variables (nats), closed form.

Defaults: factors 1 ± 0.2 and a hue shift of ±0.05 turns (torchvision `ColorJitter`'s parametrisation, small values
for a robot camera), blur σ up to 1 px and noise up to 0.02 of full scale, ranges chosen here, not from an anchor.
"""

import math
from dataclasses import dataclass
from typing import Self

import attrs
import jax
import jax.numpy as jnp
import ksim
import xax
from jaxtyping import Array, ArrayLike, PRNGKeyArray, PyTree

from ksim_entropy.distributions import Distribution, Uniform
from ksim_entropy.draws import hashed_uniforms, standard_normal, uniforms

__all__ = [
    "ImageRandomization",
    "RandomizedImage",
    "RandomizedImageCarry",
    "adjust_brightness",
    "adjust_contrast",
    "adjust_saturation",
    "gaussian_blur",
    "luma",
    "shift_hue",
]

LUMA_WEIGHTS = (0.299, 0.587, 0.114)  # ITU-R 601-2, PIL's RGB → L
PARAMETERS = ("brightness", "contrast", "saturation", "hue_shift", "blur_sigma_px", "noise_std")
_NONNEGATIVE = ("brightness", "contrast", "saturation", "blur_sigma_px", "noise_std")
_BLUR_TRUNCATE = 4.0  # kernel radius in σ (scipy.ndimage.gaussian_filter's default)


def luma(image: Array) -> Array:
    """Per-pixel luma (..., H, W) of an RGB image (..., H, W, 3)."""
    return jnp.tensordot(image, jnp.asarray(LUMA_WEIGHTS, image.dtype), axes=([-1], [0]))


def adjust_brightness(image: Array, factor: ArrayLike) -> Array:
    """Brightness: x ← factor·x, clipped to [0, 1]."""
    return jnp.clip(image * factor, 0.0, 1.0)


def adjust_contrast(image: Array, factor: ArrayLike) -> Array:
    """Contrast: x ← m + factor·(x − m), m the image's mean luma; clipped to [0, 1]."""
    mean = jnp.mean(luma(image), axis=(-2, -1))[..., None, None, None]
    return jnp.clip(mean + factor * (image - mean), 0.0, 1.0)


def adjust_saturation(image: Array, factor: ArrayLike) -> Array:
    """Saturation: x ← L + factor·(x − L), L the pixel's luma; clipped to [0, 1] (0: grey, 1: unchanged)."""
    grey = luma(image)[..., None]
    return jnp.clip(grey + factor * (image - grey), 0.0, 1.0)


def _rgb_to_hsv(image: Array) -> tuple[Array, Array, Array]:
    r, g, b = image[..., 0], image[..., 1], image[..., 2]
    top, bottom = jnp.max(image, -1), jnp.min(image, -1)
    delta = top - bottom
    safe = jnp.where(delta > 0, delta, 1.0)
    rc, gc, bc = (top - r) / safe, (top - g) / safe, (top - b) / safe
    hue = jnp.where(r == top, bc - gc, jnp.where(g == top, 2.0 + rc - bc, 4.0 + gc - rc))
    hue = jnp.where(delta > 0, jnp.mod(hue / 6.0, 1.0), 0.0)
    saturation = jnp.where(top > 0, delta / jnp.where(top > 0, top, 1.0), 0.0)
    return hue, saturation, top


def _hsv_to_rgb(hue: Array, saturation: Array, value: Array) -> Array:
    def channel(n: float) -> Array:
        k = jnp.mod(n + 6.0 * hue, 6.0)
        return value - value * saturation * jnp.clip(jnp.minimum(k, 4.0 - k), 0.0, 1.0)

    return jnp.stack([channel(5.0), channel(3.0), channel(1.0)], -1)


def shift_hue(image: Array, turns: ArrayLike) -> Array:
    """Rotate every pixel's HSV hue by `turns` (1 = the whole colour wheel); saturation and value kept."""
    hue, saturation, value = _rgb_to_hsv(image)
    return jnp.clip(_hsv_to_rgb(jnp.mod(hue + turns, 1.0), saturation, value), 0.0, 1.0)


def gaussian_blur(image: Array, sigma_px: ArrayLike, radius_px: int) -> Array:
    """Separable Gaussian blur of σ = `sigma_px` (one, or one per image) over H and W, taps −radius..radius.

    The kernel is exp(−i²/2σ²) normalised over the taps (σ = 0: the identity); `radius_px` is static (the shape of
    the computation) and σ traced; edges are mirrored. Matches `scipy.ndimage.gaussian_filter(..., mode="reflect",
    radius=radius_px)`.
    """
    if radius_px == 0:
        return image
    taps = jnp.arange(-radius_px, radius_px + 1, dtype=jnp.float32)
    sigma = jnp.maximum(jnp.asarray(sigma_px, jnp.float32), 1e-3)[..., None]  # one σ, or one per image of a batch
    kernel = jnp.exp(-0.5 * (taps / sigma) ** 2)
    kernel = kernel / jnp.sum(kernel, axis=-1, keepdims=True)
    out = image
    for axis in (-3, -2):  # H, then W
        pad = [(0, 0)] * out.ndim
        pad[out.ndim + axis] = (radius_px, radius_px)
        padded = jnp.pad(out, pad, mode="symmetric")
        size = out.shape[axis]
        out = sum(
            kernel[..., i, None, None, None] * jax.lax.slice_in_dim(padded, i, i + size, axis=out.ndim + axis)
            for i in range(2 * radius_px + 1)
        )
    return out


def _check_width(name: str, value: float) -> float:
    if not (math.isfinite(value) and value >= 0.0):
        raise ValueError(f"ImageRandomization.{name} must be finite and >= 0, got {value!r}")
    return float(value)


@attrs.define(frozen=True, kw_only=True)
class ImageRandomization:
    """Per-episode brightness, contrast, saturation, hue, blur and noise distributions (see the module docstring).

    Each distribution is over one scalar: factors (×) for brightness, contrast and saturation, turns for the hue
    shift, pixels for the blur's σ, full-scale units (images in [0, 1]) for the noise's standard deviation.
    """

    brightness: Distribution = attrs.field(factory=lambda: Uniform(low=0.8, high=1.2, unitless=True))
    contrast: Distribution = attrs.field(factory=lambda: Uniform(low=0.8, high=1.2, unitless=True))
    saturation: Distribution = attrs.field(factory=lambda: Uniform(low=0.8, high=1.2, unitless=True))
    hue_shift: Distribution = attrs.field(factory=lambda: Uniform(low=-0.05, high=0.05, reference=1.0))
    blur_sigma_px: Distribution = attrs.field(factory=lambda: Uniform(low=0.0, high=1.0, center=0.0, reference=1.0))
    noise_std: Distribution = attrs.field(factory=lambda: Uniform(low=0.0, high=0.02, center=0.0, reference=1.0))
    width: float = attrs.field(default=1.0)
    max_width: float = attrs.field(default=1.0)
    follow_curriculum: bool = attrs.field(default=False)

    def __attrs_post_init__(self) -> None:
        width, max_width = _check_width("width", self.width), _check_width("max_width", self.max_width)
        if width > max_width:
            raise ValueError(f"ImageRandomization: width {width} exceeds max_width {max_width}")
        for name in PARAMETERS:
            dist = getattr(self, name)
            if not isinstance(dist, Distribution) or dist.shape != (1,):
                raise ValueError(f"ImageRandomization.{name} must be a Distribution over one scalar, got {dist!r}")
            low, high = (float(b[0]) for b in dist.bounds(max_width))
            if not (math.isfinite(low) and math.isfinite(high)):
                raise ValueError(f"ImageRandomization.{name}: at max_width={max_width} its range is not finite")
            if name in _NONNEGATIVE and low < 0.0:
                raise ValueError(
                    f"ImageRandomization.{name}: at max_width={max_width} the range reaches {low:g}; it must stay "
                    ">= 0 (a negative factor, σ or noise level is no image change)"
                )

    @property
    def blur_radius_px(self) -> int:
        """Static kernel radius (px): 4 σ of the widest blur the randomization can draw, rounded up."""
        with jax.ensure_compile_time_eval():  # a static shape, also when asked inside a jitted function
            sigma_max = float(self.blur_sigma_px.bounds(self.max_width)[1][0])
        return math.ceil(_BLUR_TRUNCATE * sigma_max)

    def width_at(self, curriculum_level: ArrayLike) -> Array:
        """The width in use: `max_width` × the curriculum level with `follow_curriculum`, else `width`."""
        if self.follow_curriculum:
            return self.max_width * jnp.clip(jnp.asarray(curriculum_level, jnp.float32), 0.0, 1.0)
        return jnp.asarray(self.width, jnp.float32)

    def values(self, unit: Array, width: ArrayLike) -> dict[str, Array]:
        """The episode's six values from its U(0, 1) variates `unit` (..., 6), at width scale `width`."""
        return {
            name: getattr(self, name).quantile(unit[..., i : i + 1], width)[..., 0] for i, name in enumerate(PARAMETERS)
        }

    def entropies(self, width: ArrayLike | None = None) -> dict[str, Array]:
        """Differential entropy of each per-episode variable (nats) at `width` (default: `width`)."""
        w = self.width if width is None else width
        return {name: jnp.sum(getattr(self, name).entropy(w)) for name in PARAMETERS}

    def entropy(self, width: ArrayLike | None = None) -> Array:
        """Total differential entropy of the six per-episode variables (nats), closed form."""
        return sum(self.entropies(width).values())

    def apply(self, image: Array, values: dict[str, Array], noise_unit: Array) -> Array:
        """The randomized image (..., H, W, 3) in [0, 1] for an episode's `values` and this step's U(0, 1) variates.

        `values` holds one array per parameter, broadcastable against the image's leading axes; `noise_unit` has the
        image's shape.
        """

        def scalar(name: str) -> Array:
            return jnp.asarray(values[name], jnp.float32)[..., None, None, None]

        out = adjust_brightness(image, scalar("brightness"))
        out = adjust_contrast(out, scalar("contrast"))
        out = adjust_saturation(out, scalar("saturation"))
        out = shift_hue(out, scalar("hue_shift")[..., 0])
        out = gaussian_blur(out, values["blur_sigma_px"], self.blur_radius_px)
        return jnp.clip(out + scalar("noise_std") * standard_normal(noise_unit), 0.0, 1.0)


@jax.tree_util.register_dataclass
@dataclass(frozen=True)
class RandomizedImageCarry:
    """Per-environment carry: the wrapped observation's carry and the episode's six U(0, 1) variates."""

    inner: PyTree
    unit: Array


def _check_inner(_: object, attribute: attrs.Attribute, value: object) -> None:
    if not isinstance(value, ksim.Observation):
        raise TypeError(f"RandomizedImage.observation must be a ksim.Observation, got {type(value).__name__}")


@attrs.define(frozen=True, kw_only=True)
class RandomizedImage(ksim.StatefulObservation):
    """Any image-valued ksim observation, randomized per episode by an `ImageRandomization`.

    The wrapped observation must give (..., H, W, 3) images, float in [0, 1] or uint8 (read as /255); anything
    else is a ValueError naming it when the task first builds its carry. The output is float32 in [0, 1].
    """

    observation: ksim.Observation = attrs.field(validator=_check_inner)
    randomization: ImageRandomization = attrs.field(
        factory=ImageRandomization, validator=attrs.validators.instance_of(ImageRandomization)
    )

    @classmethod
    def create(cls, observation: ksim.Observation, randomization: ImageRandomization | None = None) -> Self:
        return cls(observation=observation, randomization=randomization or ImageRandomization())

    def get_name(self) -> str:
        return f"randomized_{self.observation.get_name()}"

    def _inner(self, state: ksim.ObservationInput, carry: PyTree, level: Array, rng: PRNGKeyArray) -> tuple:
        inner_state = ksim.ObservationInput(commands=state.commands, physics_state=state.physics_state, obs_carry=carry)
        if isinstance(self.observation, ksim.StatefulObservation):
            return self.observation.observe_stateful(inner_state, level, rng)
        return self.observation.observe(inner_state, level, rng), carry

    def check_image(self, spec: jax.ShapeDtypeStruct) -> None:
        """ValueError unless `spec` is an (..., H, W, 3) float or uint8 image."""
        name = type(self.observation).__name__
        if len(spec.shape) < 3 or spec.shape[-1] != 3 or min(spec.shape[-3:-1]) < 1:
            raise ValueError(f"RandomizedImage: {name} gives shape {spec.shape}; it needs RGB images (..., H, W, 3)")
        if not (jnp.issubdtype(spec.dtype, jnp.floating) or spec.dtype == jnp.uint8):
            raise ValueError(f"RandomizedImage: {name} gives {spec.dtype} images; it needs float in [0, 1] or uint8")

    def initial_carry(self, physics_state: ksim.PhysicsState, rng: PRNGKeyArray) -> RandomizedImageCarry:
        inner = (
            self.observation.initial_carry(physics_state, rng)
            if isinstance(self.observation, ksim.StatefulObservation)
            else None
        )
        state = ksim.ObservationInput(commands=xax.FrozenDict({}), physics_state=physics_state, obs_carry=inner)
        self.check_image(jax.eval_shape(lambda r: self._inner(state, inner, jnp.float32(1.0), r)[0], rng))
        return RandomizedImageCarry(inner=inner, unit=hashed_uniforms(rng, len(PARAMETERS)))

    def observe_stateful(
        self, state: ksim.ObservationInput, curriculum_level: Array, rng: PRNGKeyArray
    ) -> tuple[Array, RandomizedImageCarry]:
        carry: RandomizedImageCarry = state.obs_carry
        inner_rng, noise_rng = jax.random.split(rng)
        image, inner = self._inner(state, carry.inner, curriculum_level, inner_rng)
        image = jnp.asarray(image)
        image = image.astype(jnp.float32) / 255.0 if image.dtype == jnp.uint8 else image.astype(jnp.float32)
        dr = self.randomization
        values = dr.values(carry.unit, dr.width_at(curriculum_level))
        out = dr.apply(image, values, uniforms(noise_rng, image.shape))
        return out, RandomizedImageCarry(inner=inner, unit=carry.unit)
