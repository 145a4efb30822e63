"""The fine-tuning KL: the Gaussian KL against numerical integration, and its settings' one-line errors."""

from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest
from scipy import integrate, stats

from ksim_entropy.cli.walk import build_config
from ksim_entropy.ppo.finetune import SourceKL, gaussian_kl


@pytest.mark.parametrize(
    ("mp", "sp", "mq", "sq"), [(0.0, 1.0, 0.0, 1.0), (0.3, 0.05, 0.1, 0.08), (-1.0, 0.5, 2.0, 2.0)]
)
def test_gaussian_kl_is_the_integral(mp, sp, mq, sq):
    p, q = stats.norm(mp, sp), stats.norm(mq, sq)
    lo, hi = mp - 12 * sp, mp + 12 * sp
    expected, _ = integrate.quad(lambda x: p.pdf(x) * (p.logpdf(x) - q.logpdf(x)), lo, hi, points=[mp], limit=200)
    got = float(gaussian_kl(jnp.float32(mp), jnp.float32(sp), jnp.float32(mq), jnp.float32(sq)))
    assert got == pytest.approx(expected, rel=1e-4, abs=1e-6)


def test_gaussian_kl_is_elementwise_and_zero_only_for_equal_distributions():
    mean = np.array([[0.1, -0.2], [0.0, 0.5]], np.float32)
    std = np.array([[0.05, 0.1], [0.2, 0.3]], np.float32)
    np.testing.assert_allclose(gaussian_kl(mean, std, mean, std), 0.0, atol=1e-7)
    assert (np.asarray(gaussian_kl(mean, std, mean + 0.01, std * 1.1)) > 0).all()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"coef": 0.0}, "coef must be finite and > 0"),
        ({"coef": float("inf")}, "coef"),
        ({"coef": 1.0, "window_steps": 0}, "window_steps >= 1"),
    ],
)
def test_source_kl_refuses_bad_settings(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SourceKL(**kwargs)


def test_a_source_kl_without_a_checkpoint_is_a_one_line_error(tmp_path):
    with pytest.raises(SystemExit) as exc:
        build_config(["preset=cpu", "finetune_kl=0.1", f"exp_dir={tmp_path / 'r'}"])
    assert str(exc.value) == (
        "error: finetune_kl=0.1: finetune_kl holds the policy near the one it starts from: it needs load_from_ckpt_path"
    )


def test_kl_windows_longer_than_the_rollouts_are_a_one_line_error(tmp_path):
    ckpt = Path(__file__).resolve().parents[1] / "assets" / "policies" / "kbot-stand" / "ckpt.bin"
    args = ["preset=cpu", "finetune_kl=0.1", f"load_from_ckpt_path={ckpt}", "rollout_length_frames=6"]
    with pytest.raises(SystemExit) as exc:
        build_config([*args, f"exp_dir={tmp_path / 'r'}"])
    assert str(exc.value) == (
        "error: finetune_kl=0.1: windows of 8 steps do not fit rollouts of 6 frames; lower finetune_kl_window_steps"
    )
