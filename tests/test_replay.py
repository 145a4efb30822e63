"""Batched MJX replay (`sim2real.replay`) against CPU MuJoCo, and the mass-scale symmetry the fit relies on."""

import mujoco
import numpy as np
import pytest

from ksim_entropy.kbot.robot import resolve_robot_files
from ksim_entropy.sim2real.fit import fit_parameters
from ksim_entropy.sim2real.replay import ReplayModel, make_windows
from ksim_entropy.testing.reality import HiddenRobot, reality_log

HISTORY, HORIZON = 2, 8


@pytest.fixture(scope="module")
def replay_and_windows():
    files = resolve_robot_files("local")
    log = reality_log(HiddenRobot(), seconds=3.0, seed=4)
    groups = [np.asarray(log.group(g), dtype=np.float64) for g in ("joint_angles", "joint_vels", "output")]
    windows = make_windows(*groups, starts=[10, 60, 110], horizon=HORIZON, history=HISTORY)
    return ReplayModel(files, fit_parameters(files), suspended=True), windows


def _values(count: int, mass=1.0, friction=1.0, armature=1.0, damping=0.0, kp=1.0, kd=1.0, offsets=None):
    columns = [np.full((count, 1), v) for v in (mass, friction, armature, damping, kp, kd)]
    return [*columns, np.zeros((count, 20)) if offsets is None else np.broadcast_to(offsets, (count, 20))]


def test_replay_matches_cpu_mujoco(replay_and_windows):
    """Nominal robot, delay 0: MJX (float32) and MuJoCo's C engine (float64) on the same model agree."""
    replay, windows = replay_and_windows
    angles, vels = replay.replay(_values(1), np.array([0]), windows)
    model = replay.mj_model
    data = mujoco.MjData(model)
    base = np.asarray(replay._base)
    for w in range(len(windows.angles0)):
        mujoco.mj_resetData(model, data)
        data.qpos[:7], data.qpos[7:], data.qvel[6:] = base, windows.angles0[w], windows.vels0[w]
        for k in range(HORIZON):
            for _ in range(replay.substeps):
                data.ctrl[:] = windows.targets[w, HISTORY + k]
                mujoco.mj_step(model, data)
                data.qpos[:7], data.qvel[:6] = base, 0.0
            np.testing.assert_allclose(angles[0, w, k], data.qpos[7:], atol=2e-4)
            np.testing.assert_allclose(vels[0, w, k], data.qvel[6:], atol=2e-2)


def test_common_scale_leaves_joint_motion_unchanged(replay_and_windows):
    """Masses, armature, friction loss, damping and gains ×1.25 together: the same joint motion to below an encoder
    step (why the fit needs the weighed mass), while kp alone ×1.25 changes it by far more."""
    replay, windows = replay_and_windows
    c = 1.25
    reference = _values(1, damping=0.4, friction=1.5, armature=0.9)
    scaled = _values(1, mass=c, friction=1.5 * c, armature=0.9 * c, damping=0.4 * c, kp=c, kd=c)
    kp_only = _values(1, damping=0.4, friction=1.5, armature=0.9, kp=c)
    values = [np.concatenate(parts) for parts in zip(reference, scaled, kp_only, strict=True)]
    angles, _ = replay.replay(values, np.array([2, 2, 2]), windows)
    scaled_gap, kp_gap = np.abs(angles[1] - angles[0]).max(), np.abs(angles[2] - angles[0]).max()
    print(f"common scale: {scaled_gap:.2e} rad, kp alone: {kp_gap:.2e} rad")
    assert scaled_gap < 3e-4  # float32 and MuJoCo's constraint regularisation; an encoder step is 3.8e-4 rad
    assert kp_gap > 20 * scaled_gap


def test_latency_and_offsets_shift_the_prediction(replay_and_windows):
    """A loop latency of d physics steps applies each target d steps later; an offset δ shifts the reading."""
    replay, windows = replay_and_windows
    delta = np.linspace(-0.02, 0.02, 20)
    values = [np.concatenate(p) for p in zip(_values(1), _values(1), _values(1, offsets=delta), strict=True)]
    angles, _ = replay.replay(values, np.array([0, replay.substeps, 0]), windows)
    # one control step of latency = the previous target held one step longer: the response lags
    lagged = np.abs(angles[1] - angles[0]).max()
    assert lagged > 1e-3
    # a zero offset moves the servo's set point: reading = q − δ settles near target − sag, not target − δ − sag
    assert np.abs(angles[2] - angles[0]).max() > 1e-4
    with pytest.raises(ValueError, match="delays must lie"):
        replay.replay(_values(1), np.array([HISTORY * replay.substeps + 1]), windows)


def test_explicit_servo_replay_reproduces_the_stand_in_robot_at_its_true_values():
    """A noise-free stand-in robot (1 kHz explicit PD, hidden physics, 12 ms loop latency, encoder offsets) replayed
    at its true values with the explicit servo at 1 ms: what the encoders read, to float32 precision. The native
    servo (damping implicit) misses by far more: its implicit kd acts like extra inertia dt·kd."""
    from ksim_entropy.sim2real.sim import SimOptions
    from ksim_entropy.sim2real.sim_logs import SensorNoiseStds

    files = resolve_robot_files("local")
    offsets = tuple(np.linspace(-0.03, 0.03, 20))
    hidden = HiddenRobot(
        frictionloss_scale=1.6, armature_scale=0.8, joint_damping=0.3, kp_scale=1.1, kd_scale=0.85,
        action_latency_s=0.007, obs_latency_s=0.005, zero_offset_rad=offsets, noise=SensorNoiseStds(0, 0, 0, 0, 0),
    )  # fmt: skip
    log = reality_log(hidden, seconds=3.0, seed=5)
    groups = [np.asarray(log.group(g), dtype=np.float64) for g in ("joint_angles", "joint_vels", "output")]
    windows = make_windows(*groups, starts=[20, 70, 120], horizon=HORIZON, history=HISTORY)
    options = SimOptions(dt_s=0.001, suspended=True)
    values = _values(1, friction=1.6, armature=0.8, damping=0.3, kp=1.1, kd=0.85, offsets=np.asarray(offsets))
    delay = np.array([12])  # physics steps of 1 ms: action 7 + observation 5
    gaps = {}
    for servo in ("explicit", "native"):
        replay = ReplayModel(files, fit_parameters(files), suspended=True, options=options, servo=servo)
        angles, _ = replay.replay(values, delay, windows)
        gaps[servo] = np.abs(angles[0] - windows.angles).max()
    print(f"max |replay − log| at the truth: explicit {gaps['explicit']:.1e} rad, native {gaps['native']:.1e} rad")
    assert gaps["explicit"] < 5e-5
    assert gaps["native"] > 10 * gaps["explicit"]
    with pytest.raises(ValueError, match="servo must be"):
        ReplayModel(files, fit_parameters(files), suspended=True, servo="pid")


def test_joint_specific_leftovers_come_from_the_noisy_start_velocity_which_the_fit_profiles_out():
    """A stand-in 10 % heavier, encoders at 2e-4 rad, velocities with 0.05 rad/s of noise, replayed at its true
    values relative to the model's mass (everything / 1.1, as the fit reports them). From the true start state every
    joint's residual sits at the encoder noise; from the logged (noisy) start velocity the heavy, slow hip rolls keep
    it through the window (> 2× the noise) while the fast wrists forget it (< 1.3×). The fit's residual check reads
    the same from the residual alone (its white part is the encoder noise); with each window's start velocity
    profiled out, as the fit does, every joint reads the noise floor."""
    from ksim_entropy.sim2real.fit import _Objective, _residual_over_noise
    from ksim_entropy.sim2real.replay import Windows
    from ksim_entropy.sim2real.sim import SimOptions
    from ksim_entropy.sim2real.sim_logs import SensorNoiseStds

    files = resolve_robot_files("local")
    hidden = HiddenRobot(
        mass_scale=1.1, frictionloss_scale=1.4, armature_scale=1.1, joint_damping=0.3, kp_scale=0.95, kd_scale=1.15,
        action_latency_s=0.008, noise=SensorNoiseStds(joint_angles_rad=2e-4, joint_vels_rad_s=0.05),
    )  # fmt: skip
    quiet = HiddenRobot(**{**vars(hidden), "noise": SensorNoiseStds(0, 0, 0, 0, 0)})
    logs = [reality_log(h, seconds=6.0, seed=9) for h in (hidden, quiet)]  # same motion, the same physics
    noisy, clean = (
        make_windows(
            *(np.asarray(log.group(g), dtype=np.float64) for g in ("joint_angles", "joint_vels", "output")),
            starts=np.linspace(10, 270, 24).astype(int), horizon=10, history=2,
        )
        for log in logs
    )  # fmt: skip
    true_start = Windows(clean.angles0, clean.vels0, noisy.targets, noisy.angles, noisy.vels, noisy.history)
    replay = ReplayModel(files, fit_parameters(files), suspended=True, options=SimOptions(dt_s=0.001), servo="explicit")
    m = hidden.mass_scale
    values = _values(1, friction=1.4 / m, armature=1.1 / m, damping=0.3 / m, kp=0.95 / m, kd=1.15 / m)
    rms = {}
    for name, windows in (("logged start", noisy), ("true start", true_start)):
        angles, _ = replay.replay(values, np.array([8]), windows)
        rms[name] = np.sqrt(np.mean((angles[0] - windows.angles) ** 2, axis=(0, 1))) / 2e-4
    names = replay.joint_names
    hips = [names.index(f"dof_{side}_hip_roll_03") for side in ("left", "right")]
    wrists = [names.index(f"dof_{side}_wrist_00") for side in ("left", "right")]
    print({k: np.round(v, 2).tolist() for k, v in rms.items()})
    assert rms["true start"].max() < 1.4
    assert rms["logged start"][hips].min() > 2.0 and rms["logged start"][wrists].max() < 1.3
    ratio = _residual_over_noise(noisy, replay.replay(values, np.array([8]), noisy)[0][0])
    assert ratio[hips].min() > 1.5 and ratio[wrists].max() < 1.5
    # the fit profiles each window's start velocity out: at the true values every joint then reads the noise floor
    objective = _Objective(replay, noisy, mass_scale=1.0, batch=8)
    x = (np.array([v[0, 0] for v in values[1:6]]) - objective.low) / (objective.high - objective.low)
    objective.profile_start_velocity(x, np.zeros(20), 8.0)
    angles, vels = objective.predict(x[None], np.zeros((1, 20)), np.array([8.0]))
    profiled = noisy.angles + objective.residuals(angles, vels)[0][0]
    ratio = _residual_over_noise(noisy, profiled)
    print("profiled", ratio.round(2).tolist())
    assert ratio.max() < 1.3


def _cpu_replay(model: mujoco.MjModel, windows, base: np.ndarray, delay: float, substeps: int) -> np.ndarray:
    """CPU MuJoCo replay of every window (W, horizon, J) with the target logged at step k reaching the servos at
    physics time k·substeps + delay; in the step where it arrives the servo holds the time-weighted mean."""
    data = mujoco.MjData(model)
    out = np.zeros(windows.angles.shape)
    for w in range(len(windows.angles0)):
        mujoco.mj_resetData(model, data)
        data.qpos[:7], data.qpos[7:], data.qvel[6:] = base, windows.angles0[w], windows.vels0[w]
        for j in range(windows.horizon * substeps):
            start = j - delay  # this physics step covers [start, start + 1) on the targets' clock
            now = windows.targets[w, windows.history + int(np.floor(start / substeps))]
            after = windows.targets[w, windows.history + int(np.floor((start + 1) / substeps))]
            share = np.clip(start + 1 - substeps * np.floor((start + 1) / substeps), 0.0, 1.0)  # time after a switch
            switched = np.floor((start + 1) / substeps) != np.floor(start / substeps)
            data.ctrl[:] = (1 - share) * now + share * after if switched else now
            mujoco.mj_step(model, data)
            data.qpos[:7], data.qvel[:6] = base, 0.0
            if (j + 1) % substeps == 0:
                out[w, j // substeps] = data.qpos[7:]
    return out


def test_a_fractional_latency_is_the_target_switching_inside_a_physics_step(replay_and_windows):
    """The replay is continuous in the loop latency (the fit refines it with the physics): at d = 2.5 steps MJX
    matches CPU MuJoCo holding the two targets' time-weighted mean in the step where they switch. And that step
    model stands in for a switch mid-step: what half a step of latency changes (2 -> 2.5 steps) agrees with CPU
    MuJoCo at half the time step, where it is a whole step (4 -> 5 half steps), to a small part of one step's change."""
    replay, windows = replay_and_windows
    model, base, substeps = replay.mj_model, np.asarray(replay._base), replay.substeps
    angles, _ = replay.replay([np.concatenate([v] * 3) for v in _values(1)], np.array([2.0, 2.5, 3.0]), windows)
    blended = _cpu_replay(model, windows, base, 2.5, substeps)
    np.testing.assert_allclose(angles[1], blended, atol=2e-4)
    one_step = np.abs(angles[2] - angles[0]).max()
    assert one_step > 1e-3 and np.abs(angles[1] - angles[0]).max() > 0.3 * one_step  # it moves with the fraction
    half_step = blended - _cpu_replay(model, windows, base, 2.0, substeps)
    timestep = model.opt.timestep
    try:
        model.opt.timestep = timestep / 2
        fine = [_cpu_replay(model, windows, base, d, 2 * substeps) for d in (4.0, 5.0)]
    finally:
        model.opt.timestep = timestep
    error = np.abs(half_step - (fine[1] - fine[0])).max()
    print(f"one step of latency: {one_step:.2e} rad; half a step, blended vs switched mid-step: {error:.2e} rad")
    assert error < 0.1 * one_step


def _standing_parameters(files: object) -> list:
    """The fit's parameters, then the foot capsules' sliding friction (one coefficient)."""
    from ksim_entropy.actuation import use_native_pd
    from ksim_entropy.kbot.robot import KBOT_FOOT_COLLISION_GEOMS, load_metadata, load_robot_model
    from ksim_entropy.randomization import GeomFriction

    model = use_native_pd(load_robot_model(files), load_metadata(files))
    feet = [g for pair in KBOT_FOOT_COLLISION_GEOMS.values() for g in pair]
    return [*fit_parameters(files), GeomFriction.create(model, geom_names=feet, low=0.2, high=1.5)]


def test_a_standing_windows_base_state_is_the_one_mujoco_had():
    """The shipped standing policy on CPU MuJoCo (1 ms), pushed once: from each moment's readings alone (joint
    angles and velocities, projected gravity, gyro) `floor_start` puts the base where MuJoCo had it: height within
    1.5 mm, tilt within 0.06°, speed within 0.02 m/s and vertical velocity within 0.005 m/s (measured: 0.9 mm, 0.043°,
    0.016 m/s right after the push; yaw and the horizontal position are arbitrary on a flat floor). Windows without
    the IMU readings are refused."""
    from ksim_entropy.export import KinferRunner
    from ksim_entropy.sim2real.replay import Windows
    from ksim_entropy.sim2real.sim import KBotSimulator, SimOptions, kinfer_inputs, tilt_deg
    from tests.test_standing_policy import POLICY

    files = resolve_robot_files("local")
    sim = KBotSimulator(files, SimOptions(dt_s=0.001))
    runner = KinferRunner(POLICY)
    moments = []
    for step in range(120):
        sensors = sim.sensors()
        if step in (30, 52, 55, 60, 90, 119):
            moments.append((sensors, sim.data.qpos[:7].copy(), sim.data.qvel[:6].copy()))
        if step == 50:
            sim.data.qvel[0:2] += [0.2, -0.1]  # a push
        sim.step(runner.step(kinfer_inputs(sensors, np.zeros(3), sim.time_s))[: sim.num_joints])
    count = len(moments)
    windows = Windows(
        angles0=np.stack([m[0]["joint_angles"] for m in moments]),
        vels0=np.stack([m[0]["joint_vels"] for m in moments]),
        targets=np.zeros((count, 3, 20)),
        angles=np.zeros((count, 1, 20)),
        vels=np.zeros((count, 1, 20)),
        history=2,
        projected_g0=np.stack([m[0]["projected_g"] for m in moments]),
        gyro0=np.stack([m[0]["gyro"] for m in moments]),
    )
    options = SimOptions(dt_s=0.001)
    replay = ReplayModel(files, _standing_parameters(files), suspended=False, options=options, servo="explicit")
    qpos, qvel = replay.floor_start(windows)
    for (_, true_qpos, true_qvel), got_qpos, got_qvel in zip(moments, qpos, qvel, strict=True):
        assert abs(got_qpos[2] - true_qpos[2]) < 1.5e-3
        assert abs(tilt_deg(got_qpos[3:]) - tilt_deg(true_qpos[3:])) < 0.06
        assert abs(np.linalg.norm(got_qvel[:2]) - np.linalg.norm(true_qvel[:2])) < 0.02
        assert abs(got_qvel[2] - true_qvel[2]) < 0.005
    assert max(np.linalg.norm(m[2][:2]) for m in moments) > 0.15  # the push moved the base
    with pytest.raises(ValueError, match="projected gravity and gyro"):
        replay.floor_start(Windows(windows.angles0, windows.vels0, windows.targets, windows.angles, windows.vels, 2))


def test_a_standing_log_replays_on_the_floor_with_its_feet_holding_only_at_enough_friction():
    """A noise-free standing log of the stand-in robot (the shipped policy, 1 kHz PD, 8 ms loop, foot μ 0.8)
    replayed at the true values: its joint angles to a few mrad RMS over 0.5 s windows; at μ 0.25 the feet slide
    apart and the replay misses by several times more."""
    from ksim_entropy.sim2real.sim import SimOptions
    from ksim_entropy.sim2real.sim_logs import SensorNoiseStds
    from tests.test_standing_policy import POLICY

    files = resolve_robot_files("local")
    hidden = HiddenRobot(
        action_latency_s=0.005, obs_latency_s=0.003, foot_friction=0.8, noise=SensorNoiseStds(0, 0, 0, 0, 0)
    )
    log = reality_log(hidden, seconds=6.0, seed=2, suspended=False, policy=POLICY)
    groups = [np.asarray(log.group(g), dtype=np.float64) for g in ("joint_angles", "joint_vels", "output")]
    imu = (log.group("projected_g"), log.group("gyro"))
    windows = make_windows(*groups, starts=[40, 100, 160, 240], horizon=25, history=HISTORY, imu=imu)
    replay = ReplayModel(
        files, _standing_parameters(files), suspended=False, options=SimOptions(dt_s=0.001), servo="explicit"
    )
    values = [np.concatenate(p) for p in zip(_values(1), _values(1), strict=True)] + [np.array([[0.8], [0.25]])]
    angles, _ = replay.replay(values, np.array([8.0, 8.0]), windows)
    rms = np.sqrt(np.mean((angles - windows.angles[None]) ** 2, axis=(1, 2, 3)))
    print(f"RMS joint-angle residual: μ 0.8 (truth) {rms[0] * 1e3:.2f} mrad, μ 0.25 {rms[1] * 1e3:.2f} mrad")
    assert rms[0] < 3e-3
    assert rms[1] > 3 * rms[0]
