"""A fitted randomization as the matching target: W2 and the best width against POT and scipy, both controllers."""

import logging

import jax
import jax.numpy as jnp
import numpy as np
import ot
import pytest
from mujoco import mjx
from scipy.optimize import minimize_scalar

from ksim_entropy.curriculum import RandomizationCurriculum
from ksim_entropy.formats.fitted import FittedParameter, FittedRandomization
from ksim_entropy.formats.profile import EntropyProfile, GroupProfile
from ksim_entropy.kbot.robot import load_robot_model, resolve_robot_files
from ksim_entropy.ppo.matching import EntropyTarget, MatchRule, RandomizationTarget, load_target, uniform_w2
from ksim_entropy.randomization import (
    BodyMassScale,
    DomainRandomization,
    Gravity,
    JointDamping,
    JointFrictionLoss,
    actuator_joint_names,
)

FRICTION = (0.9, 1.1)  # the "real" friction-loss scale range: centred on 1, narrower than the default (0.5, 2)
MASS = (1.04, 1.08)  # off the default range's centre 1.0
QUANTILES = (np.arange(20_000) + 0.5) / 20_000


@pytest.fixture(scope="module")
def model():
    return mjx.put_model(load_robot_model(resolve_robot_files("local"), scene="smooth"))


def _fitted(joints, ranges):
    params = [FittedParameter(n, (lo + hi) / 2, lo, hi, "1", (hi - lo) / 4, True, (0.1, 3.0)) for n, (lo, hi) in ranges]
    return FittedRandomization("kbot", tuple(joints), tuple(params), -6.0, {"logs": ["test"]})


@pytest.fixture(scope="module")
def setup(model):
    randomization = DomainRandomization(
        parameters=[
            BodyMassScale.create(model, low=0.9, high=1.1, width=1.0, max_width=1.5),
            JointFrictionLoss.create(model, low=0.5, high=2.0, width=0.5, max_width=1.5),
            JointDamping.create(model, low=0.0, high=1.0, mode="add", width=1.0, max_width=1.5),
            Gravity.create(width=0.5, max_width=2.0),
        ]
    )
    fitted = _fitted(actuator_joint_names(model), [("mass_scale", MASS), ("frictionloss_scale", FRICTION)])
    return randomization, RandomizationTarget.from_fitted(fitted, randomization, actuator_joint_names(model))


def _pot_w2(low_a, high_a, low_b, high_b):
    """W2 of products of 1-D uniforms from POT on their quantiles (independent of the closed form)."""
    sq = 0.0
    for la, ha, lb, hb in zip(*np.broadcast_arrays(*map(np.atleast_1d, (low_a, high_a, low_b, high_b))), strict=True):
        sq += float(ot.wasserstein_1d(la + (ha - la) * QUANTILES, lb + (hb - lb) * QUANTILES, p=2))
    return np.sqrt(sq)


def test_uniform_w2_is_pots(setup):
    rng = np.random.default_rng(0)
    for _ in range(5):
        la, lb = rng.normal(size=3), rng.normal(size=3)
        ha, hb = la + rng.uniform(0.1, 2, 3), lb + rng.uniform(0.1, 2, 3)
        assert float(uniform_w2(la, ha, lb, hb)) == pytest.approx(_pot_w2(la, ha, lb, hb), rel=1e-4)


def test_targets_pair_the_fitted_parameters_and_their_best_width_minimises_w2(setup):
    randomization, target = setup
    assert [t.name for t in target.parameters] == ["body_mass_scale", "joint_friction_loss"]  # damping: not fitted
    for t in target.parameters:

        def w2(w, t=t):
            low, high = (np.asarray(b, dtype=np.float64) for b in t.dist.bounds(w))
            return _pot_w2(low, high, np.asarray(t.low), np.asarray(t.high))

        oracle = minimize_scalar(w2, bounds=(0.0, t.max_width), method="bounded", options={"xatol": 1e-7})
        assert t.best_width == pytest.approx(oracle.x, abs=2e-3), t.name  # W2 is flat near the mass optimum
        assert w2(t.best_width) <= oracle.fun * (1 + 1e-6), t.name  # and no point scipy found is better
    # Friction loss: default range (0.5, 2) stretched about 1, so the mean moves 0.25·w: w* = (1.5·0.2/12) / 0.25.
    assert target.parameters[1].best_width == pytest.approx(0.1, rel=1e-5)
    # The mass range stays centred on 1.0: its best width matches the width (0.04 / 0.2) but keeps the 0.06 offset.
    mass = target.parameters[0]
    assert mass.best_width == pytest.approx(0.2, rel=1e-5)
    bodies = mass.dist.shape[0]  # one independent scale per body: W2² adds up over them
    assert float(mass.w2(mass.best_width)) == pytest.approx(0.06 * np.sqrt(bodies), rel=1e-4)
    gap = target.gap(jnp.asarray(randomization.initial_widths))
    assert float(gap["joint_friction_loss/entropy_ratio"]) == pytest.approx(0.5 * 1.5 / 0.2, rel=1e-5)
    assert float(gap["w2"]) == pytest.approx(
        np.hypot(float(gap["body_mass_scale/w2"]), float(gap["joint_friction_loss/w2"])), rel=1e-6
    )


def _run(randomization, target, rule, decisions):
    c = RandomizationCurriculum(randomization=randomization, mode="matched", target=target, match_rule=rule)
    state = jax.vmap(c.get_initial_state)(jax.random.split(jax.random.PRNGKey(0), 2))
    history = [np.asarray(state.state.widths[0])]
    for _ in range(decisions):
        state = c(None, None, None, state)  # a fitted target reads no rollout
        history.append(np.asarray(state.state.widths[0]))
    return np.array(history)


def test_a_fitted_target_runs_jitted_as_ksim_runs_it(setup):
    """ksim keeps the curriculum as a static (hashed) constant of its jitted loop: the target must hash and trace."""
    randomization, target = setup
    rule = MatchRule(every_updates=1, controller="smooth")
    c = RandomizationCurriculum(randomization=randomization, mode="matched", target=target, match_rule=rule)
    assert hash(c) == hash(
        RandomizationCurriculum(randomization=randomization, mode="matched", target=target, match_rule=rule)
    )
    state = jax.vmap(c.get_initial_state)(jax.random.split(jax.random.PRNGKey(0), 2))
    jitted = jax.jit(lambda s: c(None, None, None, s))(state)
    np.testing.assert_allclose(jitted.state.widths, c(None, None, None, state).state.widths, rtol=1e-6)
    gap = jax.jit(target.gap)(jitted.state.widths[0])
    assert float(gap["w2"]) == pytest.approx(float(target.gap(jitted.state.widths[0])["w2"]), rel=1e-6)


def test_smooth_controller_converges_to_the_best_width_and_beats_the_seed_band(setup):
    randomization, target = setup
    best = np.array([t.best_width for t in target.parameters])
    start = randomization.initial_widths
    smooth = _run(randomization, target, MatchRule(every_updates=1, controller="smooth", rate=0.25), 40)
    k = np.arange(41)[:, None]
    expected = best + (start[:2] - best) * 0.75**k  # w_k = w* + (w_0 − w*)(1 − rate)^k
    np.testing.assert_allclose(smooth[:, :2], expected, rtol=1e-5)
    np.testing.assert_array_equal(smooth[:, 2:], np.broadcast_to(start[2:], (41, 2)))  # unfitted widths untouched

    band = _run(randomization, target, MatchRule(every_updates=1), 40)
    # The seed's rule by hand on friction: ratio = 0.5·0.9^k·1.5 / 0.2 shrinks ×0.9 while above 1.5, then stops.
    w, by_hand = 0.5, [0.5]
    for _ in range(40):
        ratio = w * 1.5 / 0.2
        w *= 0.9 if ratio > 1.5 else (1.1 if ratio < 0.7 else 1.0)
        by_hand.append(w)
    np.testing.assert_allclose(band[:, 1], by_hand, rtol=1e-5)
    w2_band = float(target.gap(jnp.asarray(band[-1]))["w2"])
    w2_smooth = float(target.gap(jnp.asarray(smooth[-1]))["w2"])
    w2_best = float(target.gap(jnp.asarray(np.r_[best, start[2:]]))["w2"])
    assert w2_smooth == pytest.approx(w2_best, rel=1e-4)
    assert w2_band > 1.05 * w2_smooth  # the band stops anywhere inside [0.7, 1.5]× the fitted entropy


def test_bad_targets_are_refused_with_the_reason(setup, model, tmp_path, caplog):
    randomization, target = setup
    joints = actuator_joint_names(model)
    with pytest.raises(ValueError, match="needs a fitted randomization target"):
        RandomizationCurriculum(randomization=randomization, mode="uniform", match_rule=MatchRule(controller="smooth"))
    with pytest.raises(ValueError, match="rate must be in"):
        MatchRule(controller="smooth", rate=0.0)
    with pytest.raises(ValueError, match="'band' or 'smooth'"):
        MatchRule(controller="pid")
    with pytest.raises(ValueError, match="nothing to match"):
        RandomizationTarget.from_fitted(_fitted(joints, [("kd_scale", (0.9, 1.0))]), randomization, joints)
    loguniform = DomainRandomization(
        parameters=[JointFrictionLoss.create(model, low=0.5, high=2.0, family="loguniform")]
    )
    with pytest.raises(ValueError, match="family='uniform'"):
        RandomizationTarget.from_fitted(_fitted(joints, [("frictionloss_scale", FRICTION)]), loguniform, joints)
    other = DomainRandomization(parameters=[Gravity.create(name="g0"), *randomization.parameters])
    with pytest.raises(ValueError, match="not this randomization's"):
        RandomizationCurriculum(randomization=other, mode="matched", target=target)
    with caplog.at_level(logging.WARNING, logger="ksim_entropy.ppo.matching"):
        RandomizationTarget.from_fitted(_fitted(joints, [("mass_scale", MASS)]), randomization, joints)
    assert "body_mass_scale" in caplog.text and "does not cover" in caplog.text

    path = _fitted(joints, [("frictionloss_scale", FRICTION)]).save(tmp_path / "fitted.json")
    assert isinstance(load_target(path, {}, randomization, joints), RandomizationTarget)
    with pytest.raises(ValueError, match="another robot"):
        load_target(path, {}, randomization, [f"j{i}" for i in range(len(joints))])
    g = GroupProfile(channels=("x",), unit="rad/s", mean=np.zeros(1), std=np.ones(1), num_samples=9)
    profile = EntropyProfile(groups={"gyro": g}, source="robot").save(tmp_path / "profile.json")
    assert isinstance(load_target(profile, {"gyro": "noisy_imu_gyro"}, randomization, joints), EntropyTarget)
    (tmp_path / "broken.json").write_text("{not json")
    with pytest.raises(ValueError, match="broken.json"):
        load_target(tmp_path / "broken.json", {"gyro": "noisy_imu_gyro"}, randomization, joints)


def test_the_mixin_logs_the_gap_to_a_fitted_target(setup):
    from ksim_entropy.ppo.mixins import entropy_metrics

    randomization, target = setup
    widths = jnp.asarray(randomization.initial_widths)
    out = entropy_metrics({}, {}, {}, target, widths)
    gap = target.gap(widths)
    assert float(out["target_w2"]) == float(gap["w2"])
    assert float(out["target_joint_friction_loss_entropy_ratio"]) == float(gap["joint_friction_loss/entropy_ratio"])
    assert float(out["target_body_mass_scale_w2"]) == float(gap["body_mass_scale/w2"])
    with pytest.raises(ValueError, match="at the randomization widths"):
        entropy_metrics({}, {}, {}, target)
