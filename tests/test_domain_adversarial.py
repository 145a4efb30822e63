"""Domain-adversarial pieces: the reversal against finite differences, the schedule's closed form, the loss against
scipy, and DANN itself on synthetic sim/real data whose domains differ by a known bias."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from scipy import special

from ksim_entropy.bridge.metrics import classifier_two_sample_test
from ksim_entropy.ppo.domain_adversarial import (
    DomainAdversarial,
    DomainClassifier,
    ReversalSchedule,
    domain_adversarial_loss,
    gradient_reversal,
    sample_windows,
)


def _objective(x: jax.Array) -> jax.Array:
    return jnp.sum(jnp.sin(x) * jnp.arange(1.0, x.size + 1.0) + x**3)


@pytest.mark.parametrize("scale", [0.0, 0.3, 2.0])
def test_reversal_gradient_is_minus_scale_times_finite_differences(scale: float) -> None:
    x = np.random.default_rng(0).normal(size=5)
    grad = jax.jit(jax.grad(lambda x, s: _objective(gradient_reversal(x, s))))(jnp.asarray(x), jnp.float32(scale))
    h = 1e-6
    f = lambda v: float(np.sum(np.sin(v) * np.arange(1.0, v.size + 1.0) + v**3))  # noqa: E731
    finite = np.array([(f(x + h * e) - f(x - h * e)) / (2 * h) for e in np.eye(x.size)])
    np.testing.assert_allclose(np.asarray(grad), -scale * finite, rtol=2e-4, atol=1e-5)
    # Forward is the identity, and the scale itself gets no gradient.
    np.testing.assert_array_equal(np.asarray(gradient_reversal(jnp.asarray(x), scale)), np.asarray(jnp.asarray(x)))
    assert float(jax.grad(lambda s: _objective(gradient_reversal(jnp.asarray(x), s)))(jnp.float32(scale))) == 0.0


def test_schedule_follows_ganin_et_al() -> None:
    schedule = ReversalSchedule(max_lambda=0.5, updates=200, gamma=10.0)
    updates = np.array([0, 20, 100, 200, 400])
    p = np.minimum(updates / 200, 1.0)
    expected = 0.5 * (2 / (1 + np.exp(-10 * p)) - 1)
    np.testing.assert_allclose(np.asarray(jax.jit(schedule)(jnp.asarray(updates))), expected, rtol=1e-6, atol=1e-7)
    assert float(schedule(0)) == 0.0
    assert float(ReversalSchedule(max_lambda=0.7, updates=0)(0)) == pytest.approx(0.7)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"max_lambda": -0.1}, "max_lambda must be finite and >= 0"),
        ({"max_lambda": float("nan")}, "max_lambda"),
        ({"gamma": -10.0}, "gamma must be finite and > 0"),
        ({"gamma": 0.0}, "gamma"),
        ({"updates": -1}, "updates must be an integer >= 0"),
        ({"updates": 2.5}, "updates"),
    ],
)
def test_schedule_refuses_a_negative_or_broken_lambda(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        ReversalSchedule(**kwargs)


def test_loss_and_accuracy_match_scipy() -> None:
    rng = np.random.default_rng(1)
    classifier = DomainClassifier(jax.random.key(0), num_features=3, hidden_size=8, depth=1)
    sim, real = rng.normal(size=(7, 3)).astype(np.float32), rng.normal(1.0, size=(4, 3)).astype(np.float32)
    out = domain_adversarial_loss(classifier, jnp.asarray(sim), jnp.asarray(real), 1.0)
    z_sim = np.asarray(jax.vmap(classifier)(jnp.asarray(sim)), dtype=np.float64)
    z_real = np.asarray(jax.vmap(classifier)(jnp.asarray(real)), dtype=np.float64)
    expected = 0.5 * (-np.mean(np.log(1 - special.expit(z_sim))) - np.mean(np.log(special.expit(z_real))))
    assert float(out.loss) == pytest.approx(expected, rel=1e-5)
    assert float(out.accuracy) == pytest.approx(0.5 * (np.mean(z_sim < 0) + np.mean(z_real > 0)))


def test_loss_refuses_mismatched_features() -> None:
    classifier = DomainClassifier(jax.random.key(0), num_features=3)
    with pytest.raises(ValueError, match=r"\(N, F\) and \(M, F\)"):
        domain_adversarial_loss(classifier, jnp.zeros((4, 3)), jnp.zeros((4, 2)), 1.0)
    with pytest.raises(ValueError, match="num_features >= 1"):
        DomainClassifier(jax.random.key(0), num_features=0)


ENCODER_LR, CLASSIFIER_LR = 3e-3, 1e-2


class _Encoder(eqx.Module):
    """Linear features (what the classifier sees) and a small MLP head on them for the task."""

    layer: eqx.nn.Linear
    head: eqx.nn.MLP

    def __init__(self, key: jax.Array) -> None:
        k1, k2 = jax.random.split(key)
        self.layer = eqx.nn.Linear(8, 6, key=k1)
        self.head = eqx.nn.MLP(6, 1, width_size=16, depth=1, activation=jax.nn.elu, key=k2)

    def features(self, x: jax.Array) -> jax.Array:
        return self.layer(x)


def _train(reversal_max: float, seed: int) -> tuple[float, float, float]:
    """Encoder + task head + domain classifier on sim (labelled) and real (unlabelled) rows; returns the held-out
    task MSE, the classifier's own training accuracy and the bridge's C2ST accuracy on held-out features."""
    rng = np.random.default_rng(seed)
    w_task = rng.normal(size=5)

    def domain(n: int, bias: float) -> tuple[np.ndarray, np.ndarray]:
        x = rng.normal(size=(n, 8)).astype(np.float32)
        y = np.tanh(x[:, 3:] @ w_task / 2).astype(np.float32)  # the task ignores the biased channels 0-2
        x[:, :3] += bias
        return x, y

    (xs, ys), (xr, _) = domain(2000, 0.0), domain(2000, 1.5)
    (xs_test, ys_test), (xr_test, _) = domain(1000, 0.0), domain(1000, 1.5)
    k_enc, k_cls = jax.random.split(jax.random.key(seed))
    params = (_Encoder(k_enc), DomainClassifier(k_cls, num_features=6, hidden_size=32, depth=1))
    schedule = ReversalSchedule(max_lambda=reversal_max, updates=1000)
    # Annealed, as Ganin et al. anneal theirs; the classifier learns faster than the encoder it reverses into, so it
    # tracks the features instead of being pushed into confidently wrong (still separable) answers.
    optimizer = optax.multi_transform(
        {
            "encoder": optax.adam(optax.cosine_decay_schedule(ENCODER_LR, 2000)),
            "classifier": optax.adam(optax.cosine_decay_schedule(CLASSIFIER_LR, 2000)),
        },
        lambda p: (jax.tree.map(lambda _: "encoder", p[0]), jax.tree.map(lambda _: "classifier", p[1])),
    )

    def loss_fn(params: tuple, xs: jax.Array, ys: jax.Array, xr: jax.Array, lam: jax.Array) -> tuple:
        enc, cls = params
        fs, fr = jax.vmap(enc.features)(xs), jax.vmap(enc.features)(xr)
        task = jnp.mean((jax.vmap(enc.head)(fs)[:, 0] - ys) ** 2)
        dom = domain_adversarial_loss(cls, fs, fr, lam)
        return task + dom.loss, dom.accuracy

    @eqx.filter_jit
    def step(params: tuple, opt_state: optax.OptState, i: jax.Array, batch: tuple) -> tuple:
        (_, acc), grads = eqx.filter_value_and_grad(loss_fn, has_aux=True)(params, *batch, schedule(i))
        updates, opt_state = optimizer.update(grads, opt_state, eqx.filter(params, eqx.is_array))
        return eqx.apply_updates(params, updates), opt_state, acc

    opt_state = optimizer.init(eqx.filter(params, eqx.is_array))
    for i in range(2000):
        idx = rng.integers(0, 2000, size=(2, 256))
        params, opt_state, acc = step(params, opt_state, jnp.int32(i), (xs[idx[0]], ys[idx[0]], xr[idx[1]]))
    enc = params[0]
    mse = float(jnp.mean((jax.vmap(enc.head)(jax.vmap(enc.features)(xs_test))[:, 0] - ys_test) ** 2))
    c2st = classifier_two_sample_test(
        np.asarray(jax.vmap(enc.features)(xs_test)), np.asarray(jax.vmap(enc.features)(xr_test)), seed=seed
    )
    return mse / float(np.var(ys_test)), float(acc), c2st.accuracy


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_reversal_makes_features_domain_invariant_while_the_control_stays_separable(seed: int) -> None:
    mse_dann, _, c2st_dann = _train(reversal_max=1.0, seed=seed)
    mse_ctrl, acc_ctrl, c2st_ctrl = _train(reversal_max=0.0, seed=seed)
    # Without reversal the bias survives in the features; with it the held-out C2ST is near chance.
    assert c2st_ctrl > 0.75 and acc_ctrl > 0.75
    assert c2st_dann < 0.6
    # ... and the task is still solved (fraction of the target's variance left unexplained).
    assert mse_dann < 0.1 and mse_ctrl < 0.1


def test_sample_windows_weights_the_windows_that_cross_a_reset_zero() -> None:
    rng = np.random.default_rng(3)
    obs = rng.normal(size=(3, 10, 2)).astype(np.float32)
    done = np.zeros((3, 10), bool)
    done[0, 4] = done[2, 9] = done[1, 0] = True
    windows, weights = sample_windows(jnp.asarray(obs), jnp.asarray(done), 4, 200, jax.random.key(0))
    windows, weights = np.asarray(windows), np.asarray(weights)
    assert windows.shape == (200, 4, 2)
    for window, weight in zip(windows, weights, strict=True):
        # Locate the window in obs (values are distinct), then the oracle: no episode end before its last step.
        env, start = (int(v[0]) for v in np.nonzero(obs[:, :, 0] == window[0, 0]))
        np.testing.assert_array_equal(window, obs[env, start : start + 4])
        assert weight == float(not done[env, start : start + 3].any())
    assert 0 < weights.sum() < 200
    with pytest.raises(ValueError, match="does not fit trajectories of 10"):
        sample_windows(jnp.asarray(obs), jnp.asarray(done), 11, 4, jax.random.key(0))


@pytest.mark.parametrize(
    ("windows", "kwargs", "match"),
    [
        (np.zeros((10, 4)), {}, r"float array \(N, W, D\), got shape \(10, 4\)"),
        (np.zeros((10, 4, 3), dtype=np.int32), {}, "float array"),
        (np.full((10, 4, 3), np.nan), {}, "120 non-finite values"),
        (np.zeros((2, 4, 3)), {"held_out_fraction": 0.1}, "at least one window on each side"),
        (np.zeros((10, 4, 3)), {"held_out_fraction": 1.0}, "held_out_fraction"),
        (np.zeros((10, 4, 3)), {"weight": 0.0}, "weight must be finite and > 0"),
        (np.zeros((10, 4, 3)), {"classifier_learning_rate": -1e-3}, "classifier_learning_rate"),
        (np.zeros((10, 4, 3)), {"windows_per_update": 0}, "windows_per_update >= 1"),
    ],
)
def test_domain_adversarial_refuses_bad_windows_and_settings(windows: np.ndarray, kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        DomainAdversarial(real_windows=windows, **kwargs)


def test_the_held_out_split_is_fixed_by_the_seed_and_disjoint() -> None:
    windows = np.arange(20 * 2 * 1, dtype=np.float64).reshape(20, 2, 1)
    dann = DomainAdversarial(real_windows=windows, held_out_fraction=0.25, seed=4)
    train, held = dann.split()
    assert train.dtype == np.float32 and (train.shape[0], held.shape[0]) == (15, 5)
    firsts = sorted(train[:, 0, 0].tolist() + held[:, 0, 0].tolist())
    assert firsts == windows[:, 0, 0].tolist()
    np.testing.assert_array_equal(
        DomainAdversarial(real_windows=windows, held_out_fraction=0.25, seed=4).split()[1], held
    )
