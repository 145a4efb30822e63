"""RecurrentActor initialisation: the output-layer scale and the initial std, against their closed forms; the actor
over windows, against stepping it by hand."""

import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ksim_entropy.policy import RecurrentActor
from ksim_entropy.ppo.recurrent import RecurrentActorCriticMixin
from ksim_entropy.ppo.temperature import gaussian_entropy

NOMINAL = (0.3, -0.5, 0.0, 1.2)


def _actor(**kwargs):
    settings = {"num_inputs": 6, "nominal_pose": NOMINAL, "hidden_size": 16, "depth": 1}
    settings |= {"min_std": 0.01, "max_std": 1.0, "var_scale": 0.5} | kwargs
    return RecurrentActor(jax.random.PRNGKey(0), **settings)


def _outputs(actor, n=64):
    obs = jax.random.normal(jax.random.PRNGKey(1), (n, 6))
    carry = jnp.zeros(actor.body.carry_shape)
    mean, std, _ = jax.vmap(lambda o: actor.mean_and_std(o, carry))(obs)
    return np.asarray(mean), np.asarray(std)


@pytest.mark.parametrize("init_std", [0.02, 0.05, 0.1, 0.35, 0.9])
def test_initial_std_is_exact_and_the_mean_sits_on_the_nominal_pose(init_std):
    mean, std = _outputs(_actor(init_std=init_std, head_init_scale=0.01))
    np.testing.assert_allclose(std, init_std, rtol=0.03)  # only the ×0.01 weights move it
    assert np.abs(mean - np.asarray(NOMINAL)).max() < 0.02
    h = float(jnp.mean(gaussian_entropy(std)))
    assert h == pytest.approx(1.4189385 + np.log(init_std), abs=0.03)


def test_default_initialisation_is_unchanged():
    # head_init_scale = 1 and no init_std: equinox's own initialisation, std ≈ (softplus(0) + 0.01) · 0.5 on average.
    mean, std = _outputs(_actor())
    assert 0.2 < float(np.mean(std)) < 0.5
    assert np.abs(mean - np.asarray(NOMINAL)).max() > 0.05


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"init_std": 0.004}, "init_std=0.004 rad is out of the std's reach"),
        ({"init_std": 1.5}, "out of the std"),
        ({"head_init_scale": 0.0}, "head_init_scale"),
        ({"head_init_scale": 2.0}, "head_init_scale"),
    ],
)
def test_bad_initialisation_is_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        _actor(**kwargs)


def test_mlp_body_is_feedforward_and_carries_its_placeholder():
    actor = _actor(body="mlp", init_std=0.1, head_init_scale=0.01)
    obs = jax.random.normal(jax.random.PRNGKey(2), (6,))
    carry = jnp.full(actor.body.carry_shape, 7.0)
    mean_a, std_a, next_carry = actor.mean_and_std(obs, carry)
    mean_b, _, _ = actor.mean_and_std(obs, jnp.zeros(actor.body.carry_shape))
    np.testing.assert_array_equal(np.asarray(next_carry), np.asarray(carry))  # passed through unchanged
    np.testing.assert_array_equal(np.asarray(mean_a), np.asarray(mean_b))  # no memory: the carry changes nothing
    np.testing.assert_allclose(np.asarray(std_a), 0.1, rtol=0.03)
    with pytest.raises(ValueError, match="policy body must be one of"):
        _actor(body="gru")


@pytest.mark.parametrize("depth", [1, 2])
def test_actor_over_windows_is_the_actor_stepped_from_a_zero_state(depth):
    """The window helper DANN and the source KL read, against the actor stepped one input at a time in Python."""
    actor = _actor(depth=depth)
    model = types.SimpleNamespace(actor=actor)
    windows = jax.random.normal(jax.random.PRNGKey(2), (3, 5, 6))
    features, mean, std = RecurrentActorCriticMixin.actor_over_windows(model, windows)
    for i in range(3):
        carry = jnp.zeros(actor.body.carry_shape)
        for x in windows[i, :-1]:
            _, _, carry = actor.mean_and_std(x, carry)
        last_features, _ = actor.body(windows[i, -1], carry)
        last_mean, last_std, _ = actor.mean_and_std(windows[i, -1], carry)
        np.testing.assert_allclose(features[i], last_features, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(mean[i], last_mean, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(std[i], last_std, rtol=1e-5, atol=1e-6)
