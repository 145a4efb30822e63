"""Visual domain randomization (`ksim_entropy.visual`) against independent implementations on K-Bot renders.

Oracles: PIL's `ImageEnhance` (brightness, contrast, colour) on 8-bit images, Python's `colorsys` for the hue,
`scipy.ndimage.gaussian_filter` for the blur, scipy's uniform entropy and KS test for the draws, on images MuJoCo's
own renderer makes of the K-Bot scene.
"""

import colorsys
import math
import os

import attrs
import jax
import jax.numpy as jnp
import ksim
import mujoco
import numpy as np
import pytest
import scipy.stats
from PIL import Image, ImageEnhance
from scipy import ndimage

from ksim_entropy import visual
from ksim_entropy.distributions import Uniform
from ksim_entropy.kbot.robot import load_robot_model, resolve_robot_files
from ksim_entropy.visual import PARAMETERS, ImageRandomization, RandomizedImage

os.environ.setdefault("MUJOCO_GL", "egl")

NEUTRAL = {
    "brightness": 1.0,
    "contrast": 1.0,
    "saturation": 1.0,
    "hue_shift": 0.0,
    "blur_sigma_px": 0.0,
    "noise_std": 0.0,
}


@pytest.fixture(scope="module")
def kbot_image() -> np.ndarray:
    """A 96 × 128 render of the K-Bot in its scene by MuJoCo's renderer (uint8 RGB).

    The shipped materials are greys; they are tinted here (shell, dark parts, motors, floor) so that saturation and
    hue have colour to act on.
    """
    model = load_robot_model(resolve_robot_files("local"), scene="smooth")
    tints = {"kbot_shell": (0.85, 0.3, 0.2), "kbot_dark": (0.2, 0.45, 0.8), "kbot_motor": (0.9, 0.75, 0.2)}
    for name, rgb in {**tints, "groundplane": (0.35, 0.6, 0.4)}.items():
        model.mat_rgba[model.mat(name).id, :3] = rgb
    data = mujoco.MjData(model)
    mujoco.mj_forward(model, data)
    camera = mujoco.MjvCamera()
    camera.lookat[:] = data.qpos[:3]
    camera.distance, camera.azimuth, camera.elevation = 2.0, 135.0, -15.0
    with mujoco.Renderer(model, 96, 128) as renderer:
        renderer.update_scene(data, camera)
        image = renderer.render().copy()
    assert image.std() > 20 and np.ptp(image, axis=-1).mean() > 40  # a scene in colour, not a blank frame
    return image


@pytest.mark.parametrize(
    ("function", "enhancer"),
    [
        (visual.adjust_brightness, ImageEnhance.Brightness),
        (visual.adjust_contrast, ImageEnhance.Contrast),
        (visual.adjust_saturation, ImageEnhance.Color),
    ],
)
@pytest.mark.parametrize("factor", [0.5, 0.8, 1.3, 1.8])
def test_photometric_factors_match_pil(kbot_image, function, enhancer, factor):
    ours = np.asarray(function(jnp.asarray(kbot_image, jnp.float32) / 255.0, factor)) * 255.0
    reference = np.asarray(enhancer(Image.fromarray(kbot_image)).enhance(factor), dtype=float)
    error = np.abs(ours - reference)
    assert error.max() <= 1.5 and error.mean() <= 0.8  # PIL rounds to 8 bits (and its mean and luma to integers)
    if factor != 1.0:
        assert np.abs(ours - kbot_image).mean() > 2.0  # the change itself is visible


def test_hue_shift_matches_colorsys(kbot_image):
    image = kbot_image.astype(np.float32) / 255.0
    for turns in (0.13, -0.4):
        ours = np.asarray(visual.shift_hue(jnp.asarray(image), turns))
        pixels = (colorsys.rgb_to_hsv(*p) for p in image.reshape(-1, 3).astype(float))
        reference = np.array([colorsys.hsv_to_rgb((h + turns) % 1.0, s, v) for h, s, v in pixels])
        np.testing.assert_allclose(ours.reshape(-1, 3), reference, atol=1e-5)


def test_blur_matches_scipy_gaussian_filter(kbot_image):
    image = kbot_image.astype(np.float32) / 255.0
    for sigma in (0.4, 1.0, 1.7):
        reference = ndimage.gaussian_filter(image.astype(float), (sigma, sigma, 0), mode="reflect", radius=(7, 7, 0))
        np.testing.assert_allclose(np.asarray(visual.gaussian_blur(jnp.asarray(image), sigma, 7)), reference, atol=1e-5)
    np.testing.assert_allclose(np.asarray(visual.gaussian_blur(jnp.asarray(image), 0.0, 4)), image, atol=1e-6)
    batch = visual.gaussian_blur(jnp.stack([image, image]), jnp.asarray([0.5, 1.2]), 7)  # one σ per image
    for got, sigma in zip(np.asarray(batch), (0.5, 1.2), strict=True):
        np.testing.assert_allclose(got, np.asarray(visual.gaussian_blur(jnp.asarray(image), sigma, 7)), atol=1e-6)


def test_sensor_noise_has_the_drawn_standard_deviation():
    grey = jnp.full((64, 64, 3), 0.5, jnp.float32)
    u = jax.random.uniform(jax.random.PRNGKey(0), grey.shape, minval=1e-6, maxval=1 - 1e-6)
    noisy = np.asarray(ImageRandomization().apply(grey, {**NEUTRAL, "noise_std": 0.05}, u))
    residual = noisy - 0.5
    assert abs(residual.mean()) < 0.002 and residual.std() == pytest.approx(0.05, rel=0.03)


def test_entropy_is_scipys_and_follows_the_width():
    dr = ImageRandomization(max_width=1.5)
    for width in (0.5, 1.0, 1.5):
        expected = {}
        for name in PARAMETERS:
            low, high = (float(b[0]) for b in getattr(dr, name).bounds(width))
            expected[name] = scipy.stats.uniform(loc=low, scale=high - low).entropy()
        got = {k: float(v) for k, v in dr.entropies(width).items()}
        assert got == pytest.approx(expected, abs=1e-5)
        assert float(dr.entropy(width)) == pytest.approx(sum(expected.values()), abs=1e-4)
    assert dr.blur_radius_px == 6  # 4 σ of the widest blur, 1.5 px


@attrs.define(frozen=True, kw_only=True)
class _Image(ksim.Observation):
    """A test double: a fixed image (any shape and dtype) as a ksim observation."""

    image: np.ndarray = attrs.field(eq=False)

    def observe(self, state, curriculum_level, rng):
        return jnp.asarray(self.image)


def _physics_state() -> ksim.PhysicsState:
    return ksim.PhysicsState(
        most_recent_action=jnp.zeros(0), data=None, event_states={}, actuator_state=None, action_latency=0
    )


def _episodes(wrapper: RandomizedImage, num: int, level: float, steps: int = 2) -> np.ndarray:
    """(num, steps, H, W, 3) images: `num` episodes (carries from distinct keys), `steps` control steps each."""

    @jax.jit
    def run(keys: jax.Array, level: jax.Array) -> jax.Array:
        def episode(key: jax.Array) -> jax.Array:
            carry = wrapper.initial_carry(_physics_state(), key)
            frames = []
            for step in range(steps):
                state = ksim.ObservationInput(commands={}, physics_state=_physics_state(), obs_carry=carry)
                frame, carry = wrapper.observe_stateful(state, level, jax.random.fold_in(key, step + 1))
                frames.append(frame)
            return jnp.stack(frames)

        return jax.vmap(episode)(keys)

    return np.asarray(run(jax.random.split(jax.random.PRNGKey(1), num), jnp.float32(level)))


def test_the_wrapper_draws_once_per_episode_at_the_curriculum_width(kbot_image):
    quiet = Uniform(low=0.0, high=1e-6, center=0.0, reference=1.0)  # no sensor noise: frames of an episode agree
    only_brightness = ImageRandomization(
        contrast=Uniform(low=0.999, high=1.001),
        saturation=Uniform(low=0.999, high=1.001),
        hue_shift=Uniform(low=-1e-6, high=1e-6, reference=1.0),
        blur_sigma_px=Uniform(low=0.0, high=1e-6, center=0.0, reference=1.0),
        noise_std=quiet,
        brightness=Uniform(low=0.5, high=1.5, unitless=True),
        follow_curriculum=True,
    )
    grey = np.full((4, 4, 3), 128, np.uint8)  # uint8 input is read as /255
    wrapper = RandomizedImage.create(_Image(image=grey), only_brightness)
    for level in (1.0, 0.4):  # one compiled function: the width is a traced input
        frames = _episodes(wrapper, 2048, level)
        np.testing.assert_allclose(frames[:, 0], frames[:, 1], atol=1e-5)  # fixed within an episode
        factors = frames[:, 0, 0, 0, 0] / (128 / 255)
        low, high = 1.0 - 0.5 * level, 1.0 + 0.5 * level
        assert scipy.stats.kstest(factors, scipy.stats.uniform(low, high - low).cdf).pvalue > 1e-3
    noisy = RandomizedImage.create(_Image(image=kbot_image[:16, :16]), ImageRandomization())
    frames = _episodes(noisy, 4, 1.0)
    assert np.all(np.isfinite(frames)) and frames.min() >= 0.0 and frames.max() <= 1.0
    assert np.abs(frames[:, 0] - frames[:, 1]).mean() > 1e-3  # the default has per-step noise


def test_bad_images_and_widths_are_refused_with_the_reason():
    with pytest.raises(ValueError, match=r"_Image gives shape \(8, 8\); it needs RGB images \(\.\.\., H, W, 3\)"):
        RandomizedImage.create(_Image(image=np.zeros((8, 8), np.float32))).initial_carry(None, jax.random.PRNGKey(0))
    with pytest.raises(ValueError, match="_Image gives int32 images; it needs float in"):
        RandomizedImage.create(_Image(image=np.zeros((8, 8, 3), np.int32))).initial_carry(None, jax.random.PRNGKey(0))
    with pytest.raises(TypeError, match="must be a ksim.Observation"):
        RandomizedImage(observation=np.zeros((8, 8, 3)))
    wide = Uniform(low=0.2, high=1.8, unitless=True)
    with pytest.raises(ValueError, match=r"brightness: at max_width=2.0 the range reaches -0.6; it must stay >= 0"):
        ImageRandomization(brightness=wide, max_width=2.0)
    with pytest.raises(ValueError, match="width 1.5 exceeds max_width 1.0"):
        ImageRandomization(width=1.5)
    with pytest.raises(ValueError, match="max_width must be finite and >= 0"):
        ImageRandomization(max_width=math.inf)
    with pytest.raises(ValueError, match="hue_shift must be a Distribution over one scalar"):
        ImageRandomization(hue_shift=Uniform(low=(-0.1, -0.1), high=(0.1, 0.1)))
