"""Randomizers on the real K-Bot: each draw is read back from the model fields MuJoCo uses and checked against the
distribution's closed-form entropy (Kozachenko–Leonenko kNN), its support, and its physical effect in mj_forward."""

import jax
import jax.numpy as jnp
import ksim
import mujoco
import numpy as np
import pytest
from mujoco import mjx
from scipy.spatial.transform import Rotation

from ksim_entropy.actuation import use_native_pd
from ksim_entropy.bridge.metrics import knn_entropy
from ksim_entropy.kbot.robot import KBOT_FOOT_COLLISION_GEOMS, load_metadata, load_robot_model, resolve_robot_files
from ksim_entropy.randomization import (
    ActuatorKdScale,
    ActuatorKpScale,
    BodyMassOffset,
    BodyMassScale,
    CenterOfMassOffset,
    DomainRandomization,
    GeomFriction,
    Gravity,
    ImuMisalignment,
    JointArmature,
    JointDamping,
    JointFrictionLoss,
    JointZeroOffset,
    TorqueLimitScale,
    with_updates,
)

FEET = [g for geoms in KBOT_FOOT_COLLISION_GEOMS.values() for g in geoms]
N = 4000


@pytest.fixture(scope="module")
def kbot():
    files = resolve_robot_files("local")
    mj = load_robot_model(files, scene="smooth")
    pd = use_native_pd(mj, load_metadata(files, mj))
    return mj, mjx.put_model(mj), mjx.put_model(pd)


def _draws(param, model, width, n=N, seed=0):
    """n model updates from the parameter at `width` (vmapped, one jit)."""
    rngs = jax.random.split(jax.random.PRNGKey(seed), n)
    return jax.jit(jax.vmap(lambda r: param.sample(model, r, width)))(rngs)


def _quat_xyzw(q):
    return np.concatenate([q[..., 1:], q[..., :1]], axis=-1)


# The declared random variable, read back from what the randomizer wrote (independent of its `apply`).
RECOVER = {
    "mass_scale": lambda p, m, u: np.asarray(u["body_mass"])[:, p.body_ids] / np.asarray(m.body_mass)[list(p.body_ids)],
    "mass_offset": lambda p, m, u: (
        np.asarray(u["body_mass"])[:, p.body_ids] - np.asarray(m.body_mass)[list(p.body_ids)]
    ),
    "com": lambda p, m, u: (
        np.asarray(u["body_ipos"])[:, p.body_ids] - np.asarray(m.body_ipos)[list(p.body_ids)]
    ).reshape(len(u["body_ipos"]), -1),
    "frictionloss": lambda p, m, u: (
        np.asarray(u["dof_frictionloss"])[:, p.dof_ids] / np.asarray(m.dof_frictionloss)[list(p.dof_ids)]
    ),
    "damping": lambda p, m, u: np.asarray(u["dof_damping"])[:, p.dof_ids] - np.asarray(m.dof_damping)[list(p.dof_ids)],
    "armature": lambda p, m, u: (
        np.asarray(u["dof_armature"])[:, p.dof_ids] / np.asarray(m.dof_armature)[list(p.dof_ids)]
    ),
    "floor": lambda p, m, u: np.asarray(u["geom_friction"])[:, p.geom_ids[:1], 0],
    "gravity": lambda p, m, u: np.asarray(u["opt.gravity"]) - np.asarray(m.opt.gravity),
    "imu": lambda p, m, u: (
        Rotation.from_quat(_quat_xyzw(np.asarray(u["site_quat"])[:, p.site_id]))
        .__mul__(Rotation.from_quat(_quat_xyzw(np.asarray(m.site_quat)[p.site_id])).inv())
        .as_euler("ZYX")[:, ::-1]
    ),
}


def _params(mx):
    return {
        "mass_scale": BodyMassScale.create(mx),
        "mass_offset": BodyMassOffset.create(mx, body_names=["torso"]),
        "com": CenterOfMassOffset.create(mx, body_names=["torso", "imu"], max_offset_m=[0.05, 0.05, 0.01]),
        "frictionloss": JointFrictionLoss.create(mx, low=0.5, high=2.0),
        "damping": JointDamping.create(mx, low=0.0, high=2.0, mode="add", family="truncnormal"),
        "armature": JointArmature.create(mx, low=0.9, high=1.1, family="loguniform"),
        "floor": GeomFriction.create(mx, geom_names=FEET),
        "gravity": Gravity.create(max_offset_mps2=0.2),
        "imu": ImuMisalignment.create(mx),
    }


@pytest.mark.parametrize("key", list(RECOVER))
@pytest.mark.parametrize("width", [1.0, 0.4])
def test_entropy_matches_knn_estimate_of_the_written_values(kbot, key, width):
    mj, mx, _ = kbot
    param = _params(mx)[key]
    values = RECOVER[key](param, mj, _draws(param, mx, width))
    assert values.shape == (N, param.dims)
    low, high = (np.asarray(b) for b in param.dist.bounds(width))
    assert (values >= low - 1e-5 * (1 + abs(low))).all() and (values <= high + 1e-5 * (1 + abs(high))).all()
    # Per-dimension entropy (the draws are independent across dimensions) against the kNN estimate.
    closed = np.asarray(param.dist.entropy(width))
    estimate = np.atleast_1d(knn_entropy(values, k=5, per_channel=True))
    np.testing.assert_allclose(estimate, closed, atol=0.06)
    assert float(param.entropy(width)) == pytest.approx(closed.sum(), rel=1e-6)
    # Independence across dimensions: no shared PRNG keys (ksim's inertia randomizer reuses one).
    if param.dims > 1:
        corr = np.corrcoef(values.T)
        assert np.max(np.abs(corr - np.eye(param.dims))) < 0.1


ACTUATOR_RECOVER = {
    "kp": lambda p, m, u: np.asarray(u["actuator_gainprm"])[:, :, 0] / m.actuator_gainprm[:, 0],
    "kd": lambda p, m, u: np.asarray(u["actuator_biasprm"])[:, :, 2] / m.actuator_biasprm[:, 2],
    "limit": lambda p, m, u: np.asarray(u["actuator_forcerange"])[:, :, 1] / m.actuator_forcerange[:, 1],
    "zero": lambda p, m, u: np.asarray(u["actuator_biasprm"])[:, :, 0] / m.actuator_gainprm[:, 0],
}


@pytest.mark.parametrize("key", list(ACTUATOR_RECOVER))
def test_actuator_parameters_entropy_matches_knn(kbot, key):
    mj, _, pd_mx = kbot
    pd = use_native_pd(mj, load_metadata(resolve_robot_files("local"), mj))
    param = {
        "kp": ActuatorKpScale.create(pd_mx, low=0.8, high=1.2),
        "kd": ActuatorKdScale.create(pd_mx, low=0.7, high=1.3, family="loguniform"),
        "limit": TorqueLimitScale.create(pd_mx, low=0.8, high=1.0),
        "zero": JointZeroOffset.create(pd_mx, low=-0.05, high=0.05, family="truncnormal"),
    }[key]
    values = ACTUATOR_RECOVER[key](param, pd, _draws(param, pd_mx, 1.0))
    assert values.shape == (N, pd.nu)
    np.testing.assert_allclose(
        np.asarray(knn_entropy(values, k=5, per_channel=True)), np.asarray(param.dist.entropy(1.0)), atol=0.06
    )
    corr = np.corrcoef(values.T)
    assert np.max(np.abs(corr - np.eye(pd.nu))) < 0.1


def test_joint_entropy_of_a_small_group_by_knn(kbot):
    _ = kbot
    param = Gravity.create(max_offset_mps2=[0.2, 0.1, 0.3])
    values = np.asarray(jax.vmap(lambda r: param.draw(r, 1.0))(jax.random.split(jax.random.PRNGKey(3), 20000)))
    # 3-D Kozachenko-Leonenko on a box: boundary bias ~ +0.07 nats at n = 20k (-2.970 vs -3.037 here).
    assert knn_entropy(values, k=5) == pytest.approx(float(param.entropy()), abs=0.1)


def test_boundary_pinning_puts_every_dimension_on_a_bound(kbot):
    _, mx, _ = kbot
    param = JointFrictionLoss.create(mx, low=0.5, high=2.0)
    low, high = (np.asarray(b) for b in param.dist.bounds(0.5))
    np.testing.assert_allclose([low[0], high[0]], [0.75, 1.5])  # stretched about the nominal scale 1
    x = np.asarray(jax.vmap(lambda r: param.draw(r, 0.5, True))(jax.random.split(jax.random.PRNGKey(0), 500)))
    on_bound = np.isclose(x, low) | np.isclose(x, high)
    assert on_bound.all()
    assert 0.4 < np.isclose(x, low).mean() < 0.6


def test_width_change_does_not_recompile(kbot):
    _, mx, pd = kbot
    dr = DomainRandomization(parameters=[*_params(mx).values(), ActuatorKpScale.create(pd, low=0.8, high=1.2)])
    traces = []

    def sample(rng, widths, pinned):
        traces.append(1)
        return dr.sample(pd, rng, widths, pinned)

    f = jax.jit(sample)
    outs = [
        f(jax.random.PRNGKey(i), jnp.asarray(dr.initial_widths) * s, p)
        for i, (s, p) in enumerate([(1, -1), (0.3, 2), (0.0, -1)])
    ]
    assert len(traces) == 1 and f._cache_size() == 1
    # The widths really act: at width 0 every parameter is at its nominal value (masses unchanged).
    np.testing.assert_allclose(outs[2]["body_mass"], pd.body_mass, rtol=1e-6)
    assert not np.allclose(outs[0]["body_mass"], pd.body_mass)


def test_all_parameters_share_one_random_draw(kbot):
    """Each separate draw is a threefry loop XLA compiles on its own: the whole set must trace exactly one."""
    _, mx, pd = kbot
    dr = DomainRandomization(parameters=[*_params(mx).values(), ActuatorKpScale.create(pd, low=0.8, high=1.2)])
    jaxpr = jax.make_jaxpr(lambda rng: dr.sample(pd, rng, dr.initial_widths, 1))(jax.random.PRNGKey(0))
    text = str(jaxpr)
    assert len(dr.parameters) > 5
    assert text.count("random_bits") == 1 and "random_split" not in text


def test_parameters_compose_in_order(kbot):
    mj, mx, _ = kbot
    torso = 2
    scale = BodyMassScale.create(mx, body_names=["torso"], low=1.5, high=1.5 + 1e-6)
    offset = BodyMassOffset.create(mx, body_names=["torso"], low=1.0, high=1.0 + 1e-6)
    u = DomainRandomization(parameters=[scale, offset]).sample(mx, jax.random.PRNGKey(0), [1.0, 1.0])
    assert float(u["body_mass"][torso]) == pytest.approx(float(mj.body_mass[torso]) * 1.5 + 1.0, rel=1e-5)


def test_foot_friction_changes_the_contact_but_ksim_floor_friction_does_not(kbot):
    mj, _, _ = kbot
    data = mujoco.MjData(mj)
    mujoco.mj_resetData(mj, data)
    data.qpos[2] -= 0.02  # press the feet into the floor so that contacts exist
    mujoco.mj_forward(mj, data)
    foot_ids = {mujoco.mj_name2id(mj, mujoco.mjtObj.mjOBJ_GEOM, g) for g in FEET}

    def contact_friction(model):
        d = mujoco.MjData(model)
        d.qpos[:] = data.qpos
        mujoco.mj_forward(model, d)
        mu = [d.contact.friction[i, 0] for i in range(d.ncon) if {d.contact.geom1[i], d.contact.geom2[i]} & foot_ids]
        assert mu, "no foot contact in the test state"
        return np.array(mu)

    base = contact_friction(mj)
    np.testing.assert_allclose(base, 0.64)  # feet (priority 1) decide the contact's friction
    ksim_floor = ksim.FloorFrictionRandomizer.from_geom_name(mj, "floor", scale_lower=0.3, scale_upper=0.3 + 1e-9)
    np.testing.assert_allclose(contact_friction(with_updates(mj, ksim_floor(mj, jax.random.PRNGKey(0)))), base)
    ours = GeomFriction.create(mj, geom_names=FEET, low=0.3, high=0.3 + 1e-6)
    np.testing.assert_allclose(contact_friction(with_updates(mj, ours(mj, jax.random.PRNGKey(0)))), 0.3, atol=1e-5)


def test_imu_misalignment_rotates_the_sensor_frame_exactly(kbot):
    mj, _, _ = kbot
    param = ImuMisalignment.create(mj, max_tilt_rad=0.3, max_yaw_rad=0.3)
    rpy = np.asarray(param.draw(jax.random.PRNGKey(5), 1.0))
    moved = with_updates(mj, param.apply(mj, jnp.asarray(rpy)))
    site = mujoco.mj_name2id(mj, mujoco.mjtObj.mjOBJ_SITE, "imu_site")
    frames = []
    for model in (mj, moved):
        d = mujoco.MjData(model)
        mujoco.mj_forward(model, d)
        frames.append(d.site_xmat[site].reshape(3, 3))
    parent = mujoco.MjData(mj)
    mujoco.mj_forward(mj, parent)
    body_rot = parent.xmat[mj.site_bodyid[site]].reshape(3, 3)
    offset = Rotation.from_euler("ZYX", rpy[::-1]).as_matrix()  # R = Rz(yaw) Ry(pitch) Rx(roll), in the body frame
    local0 = body_rot.T @ frames[0]
    np.testing.assert_allclose(frames[1], body_rot @ offset @ local0, atol=1e-6)
    # The K-Bot's IMU site coincides with its body's frame, so CPU MuJoCo skips site_quat unless the compiler's
    # site_sameframe flag is cleared (with_updates does); MJX always applies it and must agree.
    assert mj.site_sameframe[site] != 0 and moved.site_sameframe[site] == 0
    mx = mjx.put_model(mj).tree_replace({"site_quat": jnp.asarray(moved.site_quat)})
    mjx_frame = np.asarray(mjx.forward(mx, mjx.make_data(mx)).site_xmat[site])
    np.testing.assert_allclose(mjx_frame, frames[1], atol=1e-5)


def test_mass_scale_keeps_each_body_consistent(kbot):
    mj, mx, _ = kbot
    param = BodyMassScale.create(mx)
    u = param.sample(mx, jax.random.PRNGKey(1), 1.0)
    ratio_m = np.asarray(u["body_mass"])[1:] / mj.body_mass[1:]
    ratio_i = np.asarray(u["body_inertia"])[1:] / mj.body_inertia[1:]
    np.testing.assert_allclose(ratio_i, np.repeat(ratio_m[:, None], 3, axis=1), rtol=1e-5)
    moved = with_updates(mj, u)
    d = mujoco.MjData(moved)
    mujoco.mj_forward(moved, d)
    assert float(np.sum(moved.body_mass)) == pytest.approx(float(np.sum(np.asarray(u["body_mass"]))), rel=1e-6)


def test_actuator_strength_acts_on_mujoco_torques(kbot):
    mj, _, _ = kbot
    files = resolve_robot_files("local")
    pd = use_native_pd(mj, load_metadata(files, mj))
    params = [
        ActuatorKpScale.create(pd, low=0.5, high=1.5),
        ActuatorKdScale.create(pd, low=0.5, high=1.5),
        TorqueLimitScale.create(pd, low=0.5, high=1.5),
        JointZeroOffset.create(pd, low=-0.05, high=0.05),
    ]
    u = DomainRandomization(parameters=params).sample(pd, jax.random.PRNGKey(2), np.ones(4))
    kp_s = np.asarray(u["actuator_gainprm"])[:, 0] / pd.actuator_gainprm[:, 0]
    kd_s = np.asarray(u["actuator_biasprm"])[:, 2] / pd.actuator_biasprm[:, 2]
    lim_s = np.asarray(u["actuator_forcerange"])[:, 1] / pd.actuator_forcerange[:, 1]
    delta = np.asarray(u["actuator_biasprm"])[:, 0] / np.asarray(u["actuator_gainprm"])[:, 0]
    assert len(set(np.round(kp_s, 6))) == pd.nu  # per joint, not one scalar
    moved = with_updates(pd, u)
    rng = np.random.default_rng(0)
    d = mujoco.MjData(moved)
    d.qpos[7:] = rng.uniform(-0.2, 0.2, pd.nu)
    d.qvel[6:] = rng.uniform(-2, 2, pd.nu)
    d.ctrl[:] = rng.uniform(-0.2, 0.2, pd.nu)
    mujoco.mj_forward(moved, d)
    kp, kd, lim = (
        pd.actuator_gainprm[:, 0] * kp_s,
        -pd.actuator_biasprm[:, 2] * kd_s,
        pd.actuator_forcerange[:, 1] * lim_s,
    )
    expected = np.clip(kp * (d.ctrl + delta - d.qpos[7:]) - kd * d.qvel[6:], -lim, lim)
    np.testing.assert_allclose(d.actuator_force, expected, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda mx: BodyMassScale.create(mx, low=1.2, high=0.8), "low < high"),
        (lambda mx: BodyMassScale.create(mx, low=0.5, high=1.5, max_width=3.0), "must stay > 0"),
        (lambda mx: BodyMassScale.create(mx, body_names=["torsoo"]), "unknown body name.*torso"),
        (lambda mx: BodyMassOffset.create(mx, body_names=["imu"]), "mass reaches"),
        (lambda mx: JointDamping.create(mx, low=0.5, high=2.0), "scaling it does nothing"),
        (lambda mx: JointFrictionLoss.create(mx, low=0.5, high=2.0, joint_names=["dof_left_knee"]), "unknown joint"),
        (lambda mx: JointArmature.create(mx, low=0.9, high=1.1, width=2.0), "exceeds max_width"),
        (lambda mx: JointArmature.create(mx, low=0.9, high=1.1, width=-0.1), "width must be a finite number >= 0"),
        (lambda mx: GeomFriction.create(mx, geom_names=FEET, low=-0.1, high=1.0), "must stay > 0"),
        (lambda mx: ActuatorKpScale.create(mx, low=0.8, high=1.2), "use_native_pd"),
        (lambda mx: JointArmature.create(mx, low=0.9, high=1.1, family="beta"), "unknown distribution family"),
    ],
)
def test_bad_input_is_refused_with_a_clear_message(kbot, make, match):
    _, mx, _ = kbot
    with pytest.raises(ValueError, match=match):
        make(mx)


def test_impossible_widths_are_refused(kbot):
    _, mx, _ = kbot
    dr = DomainRandomization(parameters=[BodyMassScale.create(mx, max_width=1.5), Gravity.create()])
    np.testing.assert_allclose(dr.check_widths([1.5, 0.0]), [1.5, 0.0])
    with pytest.raises(ValueError, match=r"body_mass_scale=2.0 \(allowed 0..1.5\)"):
        dr.check_widths([2.0, 1.0])
    with pytest.raises(ValueError, match="gravity=nan"):
        dr.check_widths([1.0, float("nan")])
    with pytest.raises(ValueError, match="need 2 widths"):
        dr.check_widths([1.0])
    # The traced paths (entropy, npd, sampling) refuse a wrong number of widths too, naming the parameters.
    wrong_count = r"need 2 widths \(\['body_mass_scale', 'gravity'\]\)"
    for widths in ([1.0], [1.0, 1.0, 1.0], [[1.0, 1.0]]):
        for call in (dr.entropies, dr.npd, lambda w: dr.sample_from_unit(mx, jnp.full(dr.num_draws, 0.5), w)):
            with pytest.raises(ValueError, match=wrong_count):
                call(widths)
    with pytest.raises(ValueError, match="unique"):
        DomainRandomization(parameters=[Gravity.create(), Gravity.create()])


def test_zero_offset_must_follow_the_kp_scale(kbot):
    _, _, pd = kbot
    kp = ActuatorKpScale.create(pd, low=0.8, high=1.2)
    zero = JointZeroOffset.create(pd, low=-0.05, high=0.05)
    DomainRandomization(parameters=[kp, zero])
    with pytest.raises(ValueError, match="must come after actuator_kp_scale"):
        DomainRandomization(parameters=[zero, kp])


def test_npd_matches_adr_definition(kbot):
    _, mx, _ = kbot
    a = JointFrictionLoss.create(mx, low=0.5, high=2.0)  # 20 dims, width 1.5 each
    b = Gravity.create(max_offset_mps2=0.5)  # 3 dims, width 1.0 each
    dr = DomainRandomization(parameters=[a, b])
    expected = (20 * np.log(1.5) + 3 * np.log(1.0)) / 23
    assert float(dr.npd()) == pytest.approx(expected, rel=1e-6)
    assert float(dr.npd([0.5, 1.0])) == pytest.approx((20 * np.log(0.75) + 0) / 23, rel=1e-6)


def _mixed_set(mx, pd):
    """Uniform, log-uniform and truncated-normal parameters, shared (1-dim) draws, in an interleaved order."""
    return DomainRandomization(
        parameters=[
            *_params(mx).values(),
            JointFrictionLoss.create(mx, low=0.8, high=1.25, family="loguniform", name="frictionloss_log"),
            ActuatorKpScale.create(pd, low=0.8, high=1.2, family="truncnormal"),
            TorqueLimitScale.create(pd, low=0.9, high=1.1),
            BodyMassScale.create(mx, low=0.95, high=1.05, shared=True, name="mass_shared"),
            JointZeroOffset.create(pd, low=-0.02, high=0.02),
        ]
    )


@pytest.mark.parametrize("pinned", [-1, 3, 10])
def test_the_set_draws_what_each_parameter_draws_on_its_own(kbot, pinned):
    """The set evaluates its distributions class by class; every parameter must still get exactly its own draw
    (`draw_from_unit` on its columns of the variates, applied in order), its own entropy and its own npd share."""
    _, mx, pd = kbot
    dr = _mixed_set(mx, pd)
    assert len({type(p.dist) for p in dr.parameters}) == 3
    widths = np.linspace(0.2, 1.0, len(dr.parameters)).astype(np.float32)
    u = jax.random.uniform(jax.random.PRNGKey(7), (dr.num_draws,))
    got = jax.jit(lambda u: dr.sample_from_unit(pd, u, widths, pinned))(u)
    columns = np.reshape(np.asarray(u), (2, -1))
    starts = np.concatenate([[0], np.cumsum(dr.dims)])
    expected, current = {}, pd
    for i, p in enumerate(dr.parameters):
        value = p.draw_from_unit(jnp.asarray(columns[:, starts[i] : starts[i + 1]]), widths[i], pinned == i)
        new = p.apply(current, value)
        expected.update(new)
        current = with_updates(current, new)
    assert got.keys() == expected.keys()
    for field in got:
        np.testing.assert_allclose(got[field], expected[field], rtol=2e-6, atol=1e-7, err_msg=field)
    entropies = [float(p.entropy(w)) for p, w in zip(dr.parameters, widths, strict=True)]
    np.testing.assert_allclose(dr.entropies(widths), entropies, rtol=1e-5, atol=1e-5)
    for name in ("npd", "normalized_npd"):
        shares = [float(getattr(p, name)(w)) * p.dims for p, w in zip(dr.parameters, widths, strict=True)]
        assert float(getattr(dr, name)(widths)) == pytest.approx(sum(shares) / dr.dims.sum(), rel=1e-5, abs=1e-6)


def test_the_sets_figures_take_one_vector_evaluation_per_distribution_class(kbot):
    """Compile size: npd and entropies take one `log` per distribution class, not one per parameter."""
    _, mx, pd = kbot
    dr = _mixed_set(mx, pd)
    widths = jnp.asarray(dr.initial_widths)
    npd_logs = str(jax.make_jaxpr(dr.npd)(widths)).count(" log ")
    assert len(dr.parameters) == 14 and npd_logs == 3
