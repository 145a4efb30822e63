"""diagnose: clean simulated pairs give no finding, with margin; every injected fault is named first, with evidence.

"sim" and "real" logs come from the suspended K-Bot in CPU MuJoCo (`ksim_entropy.sim2real.sim_logs`): a seeded motion
script and a tiny exported policy run by kinfer's own Rust runtime. Faults are simulated (weaker actuators, actuation
delay, a collapsed policy) or written into the real log (swapped or mis-scaled channels, sensor offsets, timing).
"""

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ksim_entropy.bridge.diagnose import (
    FINDING_KINDS,
    NOISE_FLOORS,
    DiagnosisError,
    DiagnosisThresholds,
    diagnose,
    fit_response_model,
    pointed_randomizers,
)
from ksim_entropy.bridge.diagnose.randomizers import DYNAMICS_RANDOMIZERS, NOT_PHYSICS
from ksim_entropy.formats.schema import CHANNEL_GROUPS, StepLog
from ksim_entropy.kbot.robot import resolve_robot_files
from ksim_entropy.sim2real.sim import KBotSimulator, SimOptions
from ksim_entropy.sim2real.sim_logs import (
    COMMAND_NAMES,
    SensorNoiseStds,
    policy_log,
    random_commands,
    replay_open_loop,
    scripted_log,
)
from ksim_entropy.testing.reality import HiddenRobot, reality_log

REPO = Path(__file__).resolve().parents[2]
SECONDS = 30.0  # 1500 control steps at 50 Hz
TH = DiagnosisThresholds()
LEFT_KNEE, RIGHT_KNEE, RIGHT_ELBOW, LEFT_ELBOW, RIGHT_SHOULDER_ROLL = 3, 8, 13, 18, 11


def with_groups(log: StepLog, **groups: np.ndarray) -> StepLog:
    return StepLog(log.step_id, log.t_us, {**log.groups, **groups}, log.joint_names, log.source)


def rows(log: StepLog, keep: np.ndarray, t_us: np.ndarray | None = None) -> StepLog:
    t = log.t_us if t_us is None else t_us
    return StepLog(log.step_id[keep], t[keep], {k: v[keep] for k, v in log.groups.items()}, log.joint_names)


@pytest.fixture(scope="module")
def sim():
    return KBotSimulator(resolve_robot_files("local"), SimOptions(suspended=True))


@pytest.fixture(scope="module")
def clean(sim):
    """Three clean logs of the same script family (different seeds: phases, dither, commands, noise)."""
    return [scripted_log(sim, seconds=SECONDS, seed=seed) for seed in range(3)]


@pytest.fixture(scope="module")
def weak_real(sim):
    weak = KBotSimulator(resolve_robot_files("local"), SimOptions(suspended=True))
    weak.kp = weak.kp * 0.5
    real = scripted_log(weak, seconds=SECONDS, seed=11)
    return real, replay_open_loop(real, sim)


@pytest.fixture(scope="module")
def delayed_real(sim):
    delays = np.zeros(sim.num_joints, dtype=int)
    delays[[LEFT_KNEE, RIGHT_KNEE]] = 3
    delays[[RIGHT_ELBOW, LEFT_ELBOW]] = 2
    return scripted_log(sim, seconds=SECONDS, seed=12, action_delay_steps=delays), delays


# --- clean ------------------------------------------------------------------------------------------------------


# detector -> headline statistic -> its decision threshold
MARGINS = {
    "swapped_channels": {"max_identity_cost": TH.swap_min_cost},
    "misscaled_channels": {"max_abs_log_factor": math.log(TH.scale_min_factor)},
    "sensor_noise": {"max_abs_log_noise_std_ratio": math.log(TH.noise_std_ratio)},
    "temporal_mismatch": {"max_delay_r2_gain": TH.delay_min_r2_gain, "jitter_excess": TH.jitter_excess},
    "dynamics_mismatch": {"max_variance_loss": TH.dynamics_variance_loss},
    "observation_mismatch": {
        "max_w1_z": TH.observation_w1,
        "max_ks": TH.observation_ks,
        "max_abs_angle_offset_rad": TH.angle_offset_rad,
    },
    "overconfident_policy": {"median_entropy_drop_nats": TH.entropy_drop_nats},
}


def assert_clean_with_margin(diagnosis, margin: float = 2.0) -> None:
    assert diagnosis.findings == (), diagnosis.summary()
    for detector, limits in MARGINS.items():
        for name, threshold in limits.items():
            value = diagnosis.statistics[detector][name]
            assert value <= threshold / margin, f"{detector}.{name} = {value:.4g}, threshold {threshold:g}"


@pytest.mark.parametrize(("real", "ref"), [(1, 0), (2, 0), (0, 2)])
def test_clean_pairs_of_different_seeds_give_no_finding_with_margin(clean, real, ref):
    diagnosis = diagnose(clean[real], clean[ref])
    assert_clean_with_margin(diagnosis)
    assert diagnosis.statistics["dynamics_mismatch"]["joints_compared"] == 20
    assert not diagnosis.corrections


def test_clean_replay_matches(clean, sim):
    diagnosis = diagnose(clean[1], clean[0], replay=replay_open_loop(clean[1], sim))
    assert_clean_with_margin(diagnosis)
    assert diagnosis.statistics["dynamics_mismatch"]["max_replay_error"] <= TH.replay_error / 10


# --- wiring and units -------------------------------------------------------------------------------------------


def test_gyro_accel_swap_is_named_and_undone(clean):
    real = with_groups(clean[1], gyro=clean[1].group("accel"), accel=clean[1].group("gyro"))
    diagnosis = diagnose(real, clean[0])
    assert diagnosis.kinds == ("swapped_channels",), diagnosis.summary()
    finding = diagnosis.findings[0]
    assert set(finding.channels) == {"accel/x", "accel/y", "accel/z", "gyro/x", "gyro/y", "gyro/z"}
    ratio = finding.evidence["accel<->gyro:cost_ratio"]
    assert ratio >= 2 * TH.swap_min_cost_ratio
    assert finding.evidence["accel<->gyro:cost_identity_per_channel"] >= 2 * TH.swap_min_cost
    assert set(diagnosis.corrections) == {"accel", "gyro"}
    assert pointed_randomizers(f.to_dict() for f in diagnosis.findings).names == ()  # a wiring bug, not physics


def test_swapped_joint_columns_are_named(clean):
    angles = clean[1].group("joint_angles")[:, :].copy()
    angles[:, [LEFT_KNEE, RIGHT_KNEE]] = angles[:, [RIGHT_KNEE, LEFT_KNEE]]
    diagnosis = diagnose(with_groups(clean[1], joint_angles=angles), clean[0])
    assert diagnosis.kinds == ("swapped_channels",), diagnosis.summary()
    assert set(diagnosis.findings[0].channels) == {"joint_angles/dof_left_knee_04", "joint_angles/dof_right_knee_04"}


def test_joint_angles_in_degrees(clean):
    real = with_groups(clean[1], joint_angles=np.degrees(clean[1].group("joint_angles")))
    diagnosis = diagnose(real, clean[0])
    assert diagnosis.kinds == ("misscaled_channels",), diagnosis.summary()
    finding = diagnosis.findings[0]
    assert finding.channels == clean[1].channel_names(["joint_angles"])
    factors = [v for k, v in finding.evidence.items() if k.endswith(":factor")]
    assert np.median(factors) == pytest.approx(180 / math.pi, rel=0.05)
    assert math.log(min(factors)) >= 2 * math.log(TH.scale_min_factor)
    assert "degrees" in finding.message
    assert all("57.2958" in what for what in diagnosis.corrections.values())


def test_accelerometer_in_g(clean):
    diagnosis = diagnose(with_groups(clean[1], accel=clean[1].group("accel") / 9.80665), clean[0])
    assert diagnosis.kinds == ("misscaled_channels",), diagnosis.summary()
    assert diagnosis.findings[0].channels == ("accel/x", "accel/y", "accel/z")
    assert "real in g" in diagnosis.findings[0].message


# --- sensors ----------------------------------------------------------------------------------------------------


def test_gyro_bias_is_an_observation_mismatch_on_that_axis(clean):
    gyro = clean[1].group("gyro").copy()
    gyro[:, 1] += 0.05  # rad/s, 10× the gyro noise of the simulated IMU
    diagnosis = diagnose(with_groups(clean[1], gyro=gyro), clean[0])
    assert diagnosis.kinds == ("observation_mismatch",), diagnosis.summary()
    finding = diagnosis.findings[0]
    assert finding.channels == ("gyro/y",)
    assert finding.evidence["gyro/y:median_shift"] == pytest.approx(0.05, abs=0.005)
    assert finding.evidence["gyro/y:w1_z"] >= 2 * TH.observation_w1
    assert finding.evidence["gyro/y:ks"] >= 2 * TH.observation_ks
    pointer = pointed_randomizers([finding.to_dict()])  # a gyro bias is the observation block's, not physics
    assert pointer.names == () and list(pointer.not_pointed) == ["observation_mismatch:gyro"]


def test_joint_encoder_offset_is_located_and_measured(clean):
    angles = clean[1].group("joint_angles").copy()
    angles[:, RIGHT_SHOULDER_ROLL] += 0.05  # rad (2.9°): invisible in the marginals (joint spread 0.25 rad)
    diagnosis = diagnose(with_groups(clean[1], joint_angles=angles), clean[0])
    assert diagnosis.kinds == ("observation_mismatch",), diagnosis.summary()
    finding = diagnosis.findings[0]
    name = "joint_angles/dof_right_shoulder_roll_03"
    assert finding.channels == (name,)
    assert finding.evidence[f"{name}:offset_rad"] == pytest.approx(0.05, abs=0.003)
    assert finding.evidence[f"{name}:w1_z"] < TH.observation_w1  # found by the response model, not the marginal
    assert pointed_randomizers([finding.to_dict()]).names == ("joint_zero_offset",)


# --- physics ----------------------------------------------------------------------------------------------------


def test_weaker_actuators_are_a_dynamics_mismatch(clean, weak_real):
    real, replay = weak_real
    for diagnosis in (diagnose(real, clean[0]), diagnose(real, clean[0], replay=replay)):
        assert diagnosis.kinds == ("dynamics_mismatch",), diagnosis.summary()
        finding = diagnosis.findings[0]
        assert len(finding.channels) >= 15
        assert pointed_randomizers([finding.to_dict()]).names == DYNAMICS_RANDOMIZERS
        gains = [v for k, v in finding.evidence.items() if k.endswith(":gain_ratio")]
        assert 0.35 <= np.median(gains) <= 0.65  # kp × 0.5
        assert max(v for k, v in finding.evidence.items() if k.endswith(":variance_loss")) >= 10 * (
            TH.dynamics_variance_loss
        )
    replay_errors = [v for k, v in finding.evidence.items() if k.endswith(":replay_error")]
    assert max(replay_errors) >= 1.5 * TH.replay_error


# --- sensor noise (the stand-in robot of ksim_entropy.testing.reality: same physics, different sensors) ----------

NOISE_SECONDS = 8.0  # 400 control steps
QUIET = SensorNoiseStds(0.0, 0.0, 0.0, 0.0, 0.0)


def scaled_noise(factor: float, **stds: float) -> SensorNoiseStds:
    """The stand-in's default sensor noise × factor (joint encoders 2e-4 rad, IMU 0.02-0.05 m/s², ...), or `stds`."""
    return SensorNoiseStds(**{**{k: factor * v for k, v in vars(SensorNoiseStds()).items()}, **stds})


@pytest.fixture(scope="module")
def quiet_standin():
    return reality_log(HiddenRobot(noise=QUIET), seconds=NOISE_SECONDS, seed=31)


@pytest.mark.parametrize(
    "noise",
    [
        scaled_noise(1.0),  # IMU noise only counts: the encoders' 2e-4 rad is below NOISE_FLOORS
        scaled_noise(30.0),  # 6e-3 rad, 0.15 rad/s, 0.6 m/s² ...
        scaled_noise(100.0),  # 0.02 rad and 0.5 rad/s: the response models alone call this a dynamics mismatch
        scaled_noise(0.0, joint_angles_rad=0.01, joint_vels_rad_s=0.3),  # joints only
        scaled_noise(0.0, gyro_rad_s=0.02),  # gyroscope only
    ],
    ids=["x1", "x30", "x100", "joints", "gyro"],
)
def test_noise_is_found_as_sensor_noise_not_dynamics_both_ways(quiet_standin, noise):
    noisy = reality_log(HiddenRobot(noise=noise), seconds=NOISE_SECONDS, seed=32)
    expected = {f"{g}/{a}" for g in ("projected_g", "accel", "gyro") for a in "xyz" if noise.stds()[g] > 0}
    for real, sim, louder in ((noisy, quiet_standin, "real"), (quiet_standin, noisy, "sim")):
        diagnosis = diagnose(real, sim)
        assert diagnosis.kinds == ("sensor_noise",), diagnosis.summary()
        finding = diagnosis.findings[0]
        assert f"the {louder} log's sensors carry more white noise" in finding.message
        assert expected <= set(finding.channels)
        if noise.joint_angles_rad >= 3 * NOISE_FLOORS["joint_angles"]:
            angles = [c for c in finding.channels if c.startswith("joint_angles/")]
            assert len(angles) >= 15, finding.channels
            side = "real" if louder == "real" else "sim"
            found = np.median([finding.evidence[f"{c}:noise_std_{side}"] for c in angles])
            assert found == pytest.approx(noise.joint_angles_rad, rel=0.25)  # the estimate is the noise's std
        if noise.joint_vels_rad_s >= 0.5:  # the response models differ; the angles' response to outputs does not
            assert "sensor noise, not physics" in diagnosis.skipped["dynamics_mismatch:noise"], diagnosis.skipped


def with_sensor_model(log: StepLog, model: str) -> StepLog:
    """`log` read through other sensor models, added after the run (the stand-in's excitation ignores its sensors)."""
    rng = np.random.default_rng(7)
    if model == "uniform":  # ksim's noise model: ±half-width, std half-width / √3
        half = {"joint_angles": 0.01, "joint_vels": 0.3, "projected_g": 0.05, "accel": 0.1, "gyro": 0.01}
        groups = {k: v + rng.uniform(-half[k], half[k], v.shape) if k in half else v for k, v in log.groups.items()}
    else:  # an 8-bit joint encoder: steps of 2π/256 rad, std step/√12 = 7.1e-3 rad
        step = 2 * np.pi / 256
        groups = {**log.groups, "joint_angles": np.round(log.group("joint_angles") / step) * step}
    return StepLog(log.step_id, log.t_us, groups, log.joint_names, log.source)


@pytest.mark.parametrize(
    ("model", "angle_std"), [("uniform", 0.01 / math.sqrt(3)), ("quantised", 2 * np.pi / 256 / 12**0.5)]
)
def test_uniform_and_quantisation_noise_are_sensor_noise(quiet_standin, model, angle_std):
    noisy = with_sensor_model(reality_log(HiddenRobot(noise=QUIET), seconds=NOISE_SECONDS, seed=35), model)
    for real, sim, side in ((noisy, quiet_standin, "real"), (quiet_standin, noisy, "sim")):
        diagnosis = diagnose(real, sim)
        assert diagnosis.kinds == ("sensor_noise",), diagnosis.summary()
        evidence = diagnosis.findings[0].evidence
        found = [v for k, v in evidence.items() if k.startswith("joint_angles/") and k.endswith(f":noise_std_{side}")]
        assert len(found) >= 15 and np.median(found) == pytest.approx(angle_std, rel=0.2)


def test_noise_and_weaker_actuators_give_both_findings(quiet_standin):
    real = reality_log(HiddenRobot(noise=scaled_noise(30.0), kp_scale=0.5), seconds=NOISE_SECONDS, seed=33)
    for pair in ((real, quiet_standin), (quiet_standin, real)):
        diagnosis = diagnose(*pair)
        assert set(diagnosis.kinds) == {"sensor_noise", "dynamics_mismatch"}, diagnosis.summary()
        assert len(diagnosis.finding("dynamics_mismatch").channels) >= 10


def test_physics_changes_without_noise_are_no_sensor_noise(quiet_standin):
    for hidden in (HiddenRobot(noise=QUIET, kd_scale=0.5), HiddenRobot.random(5, 20, noise=QUIET)):
        diagnosis = diagnose(reality_log(hidden, seconds=NOISE_SECONDS, seed=34), quiet_standin)
        assert "sensor_noise" not in diagnosis.kinds, diagnosis.summary()
        assert diagnosis.statistics["sensor_noise"]["max_abs_log_noise_std_ratio"] < math.log(TH.noise_std_ratio)


# --- timing -----------------------------------------------------------------------------------------------------


def test_actuation_delay_names_the_delayed_joints(clean, delayed_real, sim):
    real, delays = delayed_real
    for diagnosis in (diagnose(real, clean[0]), diagnose(real, clean[0], replay=replay_open_loop(real, sim))):
        assert diagnosis.kinds == ("temporal_mismatch",), diagnosis.summary()
        finding = diagnosis.findings[0]
        found = {k.split(":")[0]: v for k, v in finding.evidence.items() if k.endswith(":extra_delay_steps")}
        expected = {f"output/{sim.joint_names[j]}": float(delays[j]) for j in np.flatnonzero(delays)}
        assert found == pytest.approx(expected, abs=0.1)  # fractional steps: 1 ms resolution at 50 Hz
        assert min(v for k, v in finding.evidence.items() if k.endswith(":r2_gain")) >= 4 * TH.delay_min_r2_gain
        assert finding.evidence["median_extra_delay_s"] == pytest.approx(2.5 * 0.02, abs=0.002)
    # the delay is explained away: the response models at their own delays agree
    assert diagnosis.statistics["dynamics_mismatch"]["max_variance_loss"] <= TH.dynamics_variance_loss / 2
    assert diagnosis.statistics["dynamics_mismatch"]["max_replay_error"] <= TH.replay_error / 1.5


@pytest.fixture(scope="module")
def nominal_standin():
    return reality_log(HiddenRobot(), seconds=NOISE_SECONDS, seed=41)


def loop_latency_ms(diagnosis) -> float:
    return diagnosis.finding("temporal_mismatch").evidence["median_extra_delay_s"] * 1e3


@pytest.mark.parametrize(
    ("hidden", "low_ms", "high_ms"),
    [
        (HiddenRobot(action_latency_s=0.015), 9, 16),  # sub-step: the whole-step model saw only a dynamics mismatch
        (HiddenRobot(action_latency_s=0.010, obs_latency_s=0.005), 9, 16),  # the same sum, split otherwise
        (HiddenRobot(obs_latency_s=0.06), 57, 63),  # a sensor lag: beyond the old fit prior, not a dynamics finding
        (HiddenRobot(action_latency_s=0.022, obs_latency_s=0.013), 30, 36),
    ],
    ids=["act15", "act10+obs5", "obs60", "act22+obs13"],
)
def test_loop_latency_at_sub_step_resolution_without_a_dynamics_finding(nominal_standin, hidden, low_ms, high_ms):
    """Same physics, a loop latency: one temporal finding, the latency within the response model's accuracy (1 ms
    grid; a sub-step latency reads up to ~5 ms low), named as action + observation latency (their split is not in
    the logs: the stand-in writes the same log for any split of a constant sum)."""
    diagnosis = diagnose(reality_log(hidden, seconds=NOISE_SECONDS, seed=42), nominal_standin)
    # (the wrists' velocity spread doubles with a sub-step latency: sampled mid-transient, not a unit error)
    assert set(diagnosis.kinds) == {"temporal_mismatch"}, diagnosis.summary()
    assert low_ms <= loop_latency_ms(diagnosis) <= high_ms
    finding = diagnosis.finding("temporal_mismatch")
    assert "action + observation latency" in finding.message
    steps = [v for k, v in finding.evidence.items() if k.endswith(":extra_delay_steps")]
    assert len(steps) >= 15 and min(steps) > 0


def test_latency_with_other_physics_gives_both_findings_and_never_a_negative_delay(nominal_standin):
    """Gains, friction and armature off and 30 ms of action latency: the latency (not −9 steps) and the physics."""
    hidden = HiddenRobot(kp_scale=1.2, kd_scale=0.8, frictionloss_scale=0.6, armature_scale=0.85, action_latency_s=0.03)
    diagnosis = diagnose(reality_log(hidden, seconds=NOISE_SECONDS, seed=43), nominal_standin)
    assert set(diagnosis.kinds) == {"temporal_mismatch", "dynamics_mismatch"}, diagnosis.summary()
    assert 24 <= loop_latency_ms(diagnosis) <= 33
    evidence = diagnosis.finding("temporal_mismatch").evidence
    assert min(v for k, v in evidence.items() if k.endswith(":extra_delay_steps")) > 0


def test_a_sim_later_than_the_robot_is_no_cause(nominal_standin):
    """The sim log is the late one: noted in `skipped`, never reported as a (negative) delay of the robot."""
    late_sim = reality_log(HiddenRobot(action_latency_s=0.04), seconds=NOISE_SECONDS, seed=44)
    diagnosis = diagnose(nominal_standin, late_sim)
    assert "temporal_mismatch" not in diagnosis.kinds, diagnosis.summary()
    assert "earlier than the sim log" in diagnosis.skipped["temporal_mismatch:sim_later"]
    assert diagnosis.statistics["temporal_mismatch"]["median_early_delay_s"] == pytest.approx(-0.04, abs=0.004)


def test_loop_jitter_and_dropped_steps(clean):
    rng = np.random.default_rng(0)
    t_us = clean[1].t_us + rng.integers(-4000, 4001, len(clean[1]))  # ±4 ms on a 20 ms period
    real = rows(clean[1], rng.random(len(clean[1])) > 0.03, t_us)  # 3 % of the steps lost
    diagnosis = diagnose(real, clean[0])
    assert diagnosis.kinds == ("temporal_mismatch",), diagnosis.summary()
    evidence = diagnosis.findings[0].evidence
    assert evidence["jitter_excess"] >= 2 * TH.jitter_excess
    assert evidence["drop_excess"] >= 2 * TH.drop_excess
    assert set(diagnosis.findings[0].channels) == {"t_us", "step_id"}


def test_a_clock_that_stands_still_is_a_temporal_mismatch(clean):
    frozen = StepLog(clean[1].step_id, np.zeros(len(clean[1]), dtype=np.int64), clean[1].groups, clean[1].joint_names)
    diagnosis = diagnose(frozen, clean[0])
    assert diagnosis.kinds == ("temporal_mismatch",), diagnosis.summary()
    assert diagnosis.findings[0].evidence["clock_error_excess"] == 1.0


def without_velocities(log: StepLog) -> StepLog:
    return StepLog(log.step_id, log.t_us, {k: v for k, v in log.groups.items() if k != "joint_vels"}, log.joint_names)


def test_response_models_work_from_joint_angles_alone(clean, weak_real, delayed_real):
    reference = without_velocities(clean[0])
    assert_clean_with_margin(diagnose(without_velocities(clean[1]), reference))
    assert diagnose(without_velocities(weak_real[0]), reference).kinds == ("dynamics_mismatch",)
    assert diagnose(without_velocities(delayed_real[0]), reference).kinds == ("temporal_mismatch",)
    # one log with measured velocities, one without: both use differences, no false dynamics finding
    assert diagnose(without_velocities(clean[1]), clean[0]).findings == ()


# --- policy -----------------------------------------------------------------------------------------------------


def test_collapsed_action_distribution_is_an_overconfident_policy(clean, sim):
    real = scripted_log(sim, seconds=SECONDS, seed=13, amplitude_rad=0.01, dither_rad=0.003)
    diagnosis = diagnose(real, clean[0])
    assert diagnosis.kinds == ("overconfident_policy",), diagnosis.summary()
    finding = diagnosis.findings[0]
    assert finding.evidence["median_entropy_drop_nats"] >= 2 * TH.entropy_drop_nats
    assert finding.evidence["collapsed_fraction"] == 1.0
    assert "dynamics_mismatch:joints" in diagnosis.skipped  # another operating regime: not compared


@pytest.fixture(scope="module")
def kinfer_policies(sim, tmp_path_factory):
    """A tiny recurrent policy (sines + feedback + a chaotic dither in the carry) and its collapsed twin."""
    import jax.numpy as jnp

    from ksim_entropy.export import KinferPolicy, export_kinfer

    joints = sim.num_joints
    nominal = jnp.asarray(sim.nominal_pose_rad, dtype=jnp.float32)
    omega = jnp.asarray(2 * np.pi * 0.02 * np.linspace(0.3, 1.2, joints), dtype=jnp.float32)  # rad per step
    phase = jnp.asarray(np.linspace(0, 2 * np.pi, joints, endpoint=False), dtype=jnp.float32)

    def make(amplitude: float, dither: float) -> KinferPolicy:
        def init_fn():
            return jnp.concatenate([jnp.zeros(1), jnp.linspace(0.11, 0.89, joints)]).astype(jnp.float32)

        def step_fn(joint_angles, joint_angular_velocities, projected_gravity, gyroscope, command, carry):
            step, chaos = carry[0], carry[1:]
            wave = jnp.sin(omega * step + phase) * (1.0 + 0.3 * command[0])
            feedback = -0.2 * (joint_angles - nominal) - 0.02 * joint_angular_velocities + 0.01 * gyroscope[0]
            action = nominal + amplitude * wave + dither * (chaos - 0.5) + feedback + 0.0 * projected_gravity[2]
            return action, jnp.concatenate([carry[:1] + 1.0, 3.99 * chaos * (1.0 - chaos)])  # logistic map

        return KinferPolicy(init_fn, step_fn, sim.joint_names, COMMAND_NAMES, carry_size=joints + 1)

    out = tmp_path_factory.mktemp("policies")
    return export_kinfer(make(0.3, 0.08), out / "policy.kinfer"), export_kinfer(make(0.01, 0.005), out / "flat.kinfer")


@pytest.fixture(scope="module")
def policy_logs(kinfer_policies, sim, tmp_path_factory):
    policy, flat = kinfer_policies
    log_dir = tmp_path_factory.mktemp("kinfer_logs")

    def run(path: Path, seed: int, **options) -> StepLog:
        return policy_log(
            path, seconds=10.0, command_fn=random_commands(seed), sim=sim, log_dir=log_dir, seed=seed, **options
        )

    runtime = run(policy, 0)  # kinfer's wall-clock t_us
    simulated = {"timestamps": "simulated"}
    return {
        "runtime": runtime,
        "sim": run(policy, 1, **simulated),
        "real": run(policy, 2, **simulated),
        "delayed": run(policy, 3, action_delay_steps=2, **simulated),
        "collapsed": run(flat, 4, **simulated),
    }


def test_policy_log_is_kinfers_own_ndjson(policy_logs, sim):
    log = policy_logs["runtime"]
    assert Path(log.source).suffix == ".ndjson" and Path(log.source).is_file()
    assert len(log) == 500 and np.array_equal(log.step_id, np.arange(500))
    assert log.group_names == ("joint_angles", "joint_vels", "projected_g", "gyro", "command", "output")
    assert log.joint_names == sim.joint_names
    # wall-clock µs of kinfer's schedule: ctrl_dt / speedup = 5 ms (the median holds even on a loaded machine)
    assert 4000 <= np.median(np.diff(log.t_us)) <= 10000  # (never the simulated 20 ms)
    assert np.array_equal(np.diff(policy_logs["sim"].t_us), np.full(499, 20000))


def test_policy_logs_clean_delayed_and_collapsed(policy_logs):
    reference = policy_logs["sim"]
    assert_clean_with_margin(diagnose(policy_logs["real"], reference))
    delayed = diagnose(policy_logs["delayed"], reference)
    assert delayed.kinds == ("temporal_mismatch",), delayed.summary()
    steps = [v for k, v in delayed.findings[0].evidence.items() if k.endswith(":extra_delay_steps")]
    # 1 ms resolution; a closed-loop policy's outputs excite less than a dither, so single joints scatter more
    assert len(steps) == 20 and np.median(steps) == pytest.approx(2.0, abs=0.1)
    assert steps == pytest.approx([2.0] * 20, abs=0.4)
    collapsed = diagnose(policy_logs["collapsed"], reference)
    assert collapsed.kinds == ("overconfident_policy",), collapsed.summary()


# --- results and bad input --------------------------------------------------------------------------------------


def test_diagnosis_serialises_to_json(clean):
    gyro = clean[1].group("gyro").copy()
    gyro[:, 0] += 0.1
    diagnosis = diagnose(with_groups(clean[1], gyro=gyro), clean[0])
    data = json.loads(json.dumps(diagnosis.to_dict(), allow_nan=False))
    assert data["findings"][0]["kind"] == "observation_mismatch"
    assert data["thresholds"]["observation_w1"] == TH.observation_w1
    assert set(data["statistics"]) == set(FINDING_KINDS)


def test_bad_inputs_raise_clear_errors(clean):
    log = clean[0]
    with pytest.raises(DiagnosisError, match="real log has 50 steps"):
        diagnose(log.select(slice(0, 50)), log)
    fewer = StepLog(log.step_id, log.t_us, {"joint_angles": log.group("joint_angles")[:, :19]})
    with pytest.raises(DiagnosisError, match="joint_angles has 19 joints in the real log but 20"):
        diagnose(fewer, log)
    renamed = StepLog(log.step_id, log.t_us, log.groups, tuple(reversed(log.joint_names)))
    with pytest.raises(DiagnosisError, match="different joints"):
        diagnose(renamed, log)
    with pytest.raises(DiagnosisError, match="no common channel group"):
        diagnose(StepLog(log.step_id, log.t_us, {"gyro": log.group("gyro")}), fewer)
    with pytest.raises(DiagnosisError, match="replay has 19 joints"):
        replay = StepLog(log.step_id, log.t_us, {"joint_angles": log.group("joint_angles")[:, :19]})
        diagnose(clean[1], log, replay=replay)
    with pytest.raises(ValueError, match="scale_min_factor must be > 1"):
        DiagnosisThresholds(scale_min_factor=1.0)
    with pytest.raises(DiagnosisError, match="needs groups"):
        fit_response_model(StepLog(log.step_id, log.t_us, {"gyro": log.group("gyro")}))


def test_missing_groups_skip_detectors_with_reasons(clean):
    imu_only = {g: clean[1].group(g) for g in ("projected_g", "accel", "gyro")}
    diagnosis = diagnose(StepLog(clean[1].step_id, clean[1].t_us, imu_only), clean[0])
    assert diagnosis.findings == ()
    assert "needs" in diagnosis.skipped["dynamics_mismatch"]
    assert "output" in diagnosis.skipped["overconfident_policy"]
    assert "observation_mismatch:command_gate" in diagnosis.skipped
    dead = with_groups(clean[1], gyro=np.full((len(clean[1]), 3), np.nan))  # a gyroscope that only sent nulls
    assert "gyro/x, gyro/y, gyro/z" in diagnose(dead, clean[0]).skipped["observation_mismatch:no_data"]


@pytest.fixture(scope="module")
def short(sim):
    """A real and a sim log of 4 s (200 steps): enough for every detector to run, too short to calibrate them."""
    return scripted_log(sim, seconds=4.0, seed=21), scripted_log(sim, seconds=4.0, seed=22)


def degraded(log: StepLog, mode: str, *names: str) -> StepLog:
    """`log` with groups `names` left out ("missing"), zero-wide ("empty": e.g. `command: []`) or all NaN ("nan")."""
    groups = dict(log.groups)
    for name in names:
        if mode == "missing":
            groups.pop(name, None)
        elif mode == "empty":
            groups[name] = np.zeros((len(log), 0))
        else:
            groups[name] = np.full_like(groups[name], np.nan)
    return StepLog(log.step_id, log.t_us, groups, log.joint_names, log.source)


def diagnosis_or_one_line_error(real: StepLog, sim: StepLog) -> str:
    """The diagnosis summary, or the DiagnosisError's message; anything else (a traceback) fails the test."""
    try:
        diagnosis = diagnose(real, sim)
    except DiagnosisError as err:
        assert "\n" not in str(err)
        return f"error: {err}"
    json.dumps(diagnosis.to_dict(), allow_nan=False)
    return diagnosis.summary()


def test_logs_without_commands_are_diagnosed(short):
    # `command: []` in both logs (a policy without a command input) crashed _detect_scale (TypeError)
    real, sim = (degraded(log, "empty", "command") for log in short)
    diagnosis = diagnose(real, sim)
    assert "command" in diagnosis.skipped["empty_groups:real"] and "command" in diagnosis.skipped["empty_groups:sim"]
    assert not any(name.startswith("command") for f in diagnosis.findings for name in f.channels)
    assert diagnosis.statistics["misscaled_channels"]["max_abs_log_factor"] < math.log(TH.scale_min_factor)


@pytest.mark.parametrize("mode", ["missing", "empty", "nan"])
def test_every_group_missing_empty_or_nan_gives_a_diagnosis_or_a_one_line_error(short, mode):
    real, sim = short
    for group in CHANNEL_GROUPS:
        if mode == "empty" and group in ("projected_g", "accel", "gyro"):
            continue  # x, y, z groups are 3 wide by schema
        for pair in ((degraded(real, mode, group), sim), (real, degraded(sim, mode, group))):
            diagnosis_or_one_line_error(*pair)
        diagnosis_or_one_line_error(degraded(real, mode, group), degraded(sim, mode, group))
    combos = [("joint_angles", "output"), ("joint_angles", "joint_vels"), ("output", "command")]
    combos += [tuple(g for g in CHANNEL_GROUPS if g != keep) for keep in ("command", "output", "gyro")]
    for names in combos:
        if mode == "empty":
            names = tuple(g for g in names if g not in ("projected_g", "accel", "gyro"))
        diagnosis_or_one_line_error(degraded(real, mode, *names), degraded(sim, mode, *names))
        diagnosis_or_one_line_error(degraded(real, mode, *names), sim)
    assert "no common channel group" in diagnosis_or_one_line_error(
        degraded(real, "missing", "command"), degraded(sim, "missing", *(g for g in CHANNEL_GROUPS if g != "command"))
    )


def test_nan_rows_and_constant_channels_do_not_crash(clean):
    angles = clean[1].group("joint_angles").copy()
    angles[100:110, 4] = np.nan
    gyro = np.full_like(clean[1].group("gyro"), 0.02)  # a stuck gyroscope: constant 0.02 rad/s
    diagnosis = diagnose(with_groups(clean[1], joint_angles=angles, gyro=gyro), clean[0])
    assert diagnosis.kinds == ("sensor_noise", "observation_mismatch"), diagnosis.summary()
    assert "gyro/x (constant in the real log: stuck?)" in diagnosis.findings[0].message  # a real sensor has noise
    assert set(diagnosis.findings[1].channels) == {"gyro/x", "gyro/y", "gyro/z"}
    assert diagnosis.findings[1].evidence["gyro/x:median_shift"] == pytest.approx(0.02, abs=0.002)


def test_diagnose_imports_without_simulation_packages():
    code = (
        "import sys\n"
        "for name in ('ksim', 'mujoco', 'jax', 'xax'): sys.modules[name] = None\n"
        "import ksim_entropy.bridge.diagnose\n"
        "heavy = sorted(m for m, mod in sys.modules.items() if mod is not None\n"
        "               and m.split('.')[0] in {'ksim', 'mujoco', 'xax', 'jax', 'kinfer', 'onnx'})\n"
        "assert not heavy, heavy\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr


def test_every_finding_kind_points_at_randomizers_or_says_why_not():
    kinds = set(NOT_PHYSICS) | {"dynamics_mismatch", "observation_mismatch"}
    assert kinds == set(FINDING_KINDS)
    findings = [{"kind": kind, "channels": ["projected_g/x", "accel/y"]} for kind in FINDING_KINDS]
    pointer = pointed_randomizers(findings)
    assert pointer.names == (*DYNAMICS_RANDOMIZERS, "imu_misalignment")  # in the order found, each once
    assert set(pointer.not_pointed) == set(NOT_PHYSICS)
    assert json.loads(json.dumps(pointer.to_dict()))["names"] == list(pointer.names)
