"""Transfer events and verification bundles: VERIFIED on a clean pair with margin, FAILED on the right criterion for
each fault, a SHA-256 that is stable, moves with any event and exposes tampering."""

import json
import math
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from ksim_entropy.bridge.verify import (
    CRITERIA,
    SCHEMA,
    TransferEvents,
    VerificationError,
    VerificationThresholds,
    canonical_json,
    check_bundle,
    transfer_events,
    verify,
)
from ksim_entropy.formats.schema import StepLog
from ksim_entropy.kbot.robot import resolve_robot_files
from ksim_entropy.sim2real.sim import KBotSimulator, SimOptions
from ksim_entropy.sim2real.sim_logs import replay_open_loop, scripted_log

REPO = Path(__file__).resolve().parents[2]
SECONDS = 20.0
SEED = 7  # the script: "real" and "sim" run the same script, with independent sensor noise
TH = VerificationThresholds()


def with_groups(log: StepLog, **groups: np.ndarray) -> StepLog:
    return StepLog(log.step_id, log.t_us, {**log.groups, **groups}, log.joint_names, log.source)


@pytest.fixture(scope="module")
def sim():
    return KBotSimulator(resolve_robot_files("local"), SimOptions(suspended=True))


def make_pair(sim: KBotSimulator) -> tuple[StepLog, StepLog]:
    return (
        scripted_log(sim, seconds=SECONDS, seed=SEED, noise_seed=2),
        scripted_log(sim, seconds=SECONDS, seed=SEED, noise_seed=1),
    )


@pytest.fixture(scope="module")
def pair(sim):
    """(real, sim) of the same script."""
    return make_pair(sim)


@pytest.fixture(scope="module")
def clean_events(pair):
    return transfer_events(*pair)


def test_events_are_per_common_step(pair, clean_events):
    real, _ = pair
    events = clean_events
    assert len(events) == len(real) and np.array_equal(events.step_id, real.step_id)
    assert events.dynamics_source == "model" and events.window_steps == 50
    assert events.nominal_period_s == pytest.approx(0.02)
    assert np.isnan(events.kl_gap_nats[:49]).all() and np.isfinite(events.kl_gap_nats[49:]).all()
    assert np.isnan(events.latency_delta_s[0]) and np.allclose(events.latency_delta_s[1:], 0.0)
    assert len(events.channels) == 49 and events.channels[0] == "joint_angles/dof_left_hip_pitch_04"


def assert_verified_with_margin(bundle, margin: float = 2.0) -> None:
    assert bundle.status == "VERIFIED", [c for c in bundle.criteria if c.status != "VERIFIED"]
    assert [c.name for c in bundle.criteria] == list(CRITERIA)
    for criterion in bundle.criteria:
        assert criterion.measured <= criterion.threshold / margin, criterion


def test_clean_pair_is_verified_with_margin(pair, sim, clean_events):
    assert_verified_with_margin(verify(clean_events))
    real, reference = pair
    with_replay = verify(transfer_events(real, reference, replay=replay_open_loop(real, sim)))
    assert with_replay.events.dynamics_source == "replay"
    assert_verified_with_margin(with_replay)
    assert with_replay.criterion("dynamics").unit == "rad"


def failed(bundle) -> set[str]:
    return {c.name for c in bundle.criteria if c.status == "FAILED"}


def test_gyro_bias_fails_observation_and_kl_gap(pair):
    real, reference = pair
    gyro = real.group("gyro").copy()
    gyro[:, 1] += 0.5  # rad/s: 4× the gyro noise the policy was trained with
    bundle = verify(transfer_events(with_groups(real, gyro=gyro), reference))
    assert bundle.status == "FAILED" and failed(bundle) == {"observation", "kl_gap"}
    assert bundle.criterion("observation").measured >= 2 * TH.max_observation_error
    assert bundle.criterion("kl_gap").measured >= 2 * TH.max_kl_gap_nats
    assert bundle.criterion("observation").reason.endswith(f"> {TH.max_observation_error:.4g}")


def test_weak_actuators_fail_dynamics(pair, sim):
    _, reference = pair
    weak = KBotSimulator(resolve_robot_files("local"), SimOptions(suspended=True))
    weak.kp = weak.kp * 0.5
    real = scripted_log(weak, seconds=SECONDS, seed=SEED, noise_seed=2)
    model = verify(transfer_events(real, reference))
    assert failed(model) == {"dynamics"}
    assert model.criterion("dynamics").measured >= 2 * TH.max_dynamics_error_ratio
    replayed = verify(transfer_events(real, reference, replay=replay_open_loop(real, sim)))
    assert failed(replayed) == {"dynamics"}
    assert replayed.criterion("dynamics").measured >= 2 * TH.max_dynamics_error_rad


def test_actuation_delay_fails_dynamics(pair, sim):
    _, reference = pair
    real = scripted_log(sim, seconds=SECONDS, seed=SEED, noise_seed=2, action_delay_steps=2)
    bundle = verify(transfer_events(real, reference))
    assert "dynamics" in failed(bundle) and "latency" not in failed(bundle)
    assert bundle.criterion("dynamics").measured >= 2 * TH.max_dynamics_error_ratio


def test_jitter_and_dropped_steps_fail_latency(pair):
    real, reference = pair
    rng = np.random.default_rng(0)
    t_us = real.t_us + rng.integers(-4000, 4001, len(real))
    keep = rng.random(len(real)) > 0.03
    jittery = StepLog(real.step_id[keep], t_us[keep], {k: v[keep] for k, v in real.groups.items()}, real.joint_names)
    bundle = verify(transfer_events(jittery, reference))
    assert failed(bundle) == {"latency"}
    assert bundle.criterion("latency").measured >= 2 * TH.max_latency_fraction
    assert len(bundle.events) == keep.sum()


# --- the bundle -------------------------------------------------------------------------------------------------


def test_sha256_is_stable_across_runs_and_moves_with_any_event(pair, sim, clean_events):
    bundle = verify(clean_events)
    again = verify(transfer_events(*make_pair(sim)))  # logs simulated again from scratch
    assert again.sha256 == bundle.sha256 and again.to_json() == bundle.to_json()
    assert len(bundle.sha256) == 64 and int(bundle.sha256, 16) >= 0
    changed = clean_events.observation_error.copy()
    changed[123] += 1e-3
    moved = verify(replace(clean_events, observation_error=changed))
    assert moved.sha256 != bundle.sha256 and moved.status == "VERIFIED"
    stricter = verify(clean_events, VerificationThresholds(max_kl_gap_nats=0.4))
    assert stricter.sha256 != bundle.sha256


def test_check_bundle_detects_tampering(clean_events):
    text = verify(clean_events).to_json()
    assert check_bundle(text)
    data = json.loads(text)
    assert data["schema"] == SCHEMA and data["status"] == "VERIFIED"

    def tampered(edit) -> str:
        copy = json.loads(text)
        edit(copy)
        return json.dumps(copy)

    assert check_bundle(tampered(lambda d: None))  # re-serialised differently, same content: still intact
    assert not check_bundle(tampered(lambda d: d["events"]["observation_error"].__setitem__(10, 0.123)))
    assert not check_bundle(tampered(lambda d: d["events"]["step_id"].__setitem__(0, 99)))
    assert not check_bundle(tampered(lambda d: d.__setitem__("status", "FAILED")))
    assert not check_bundle(tampered(lambda d: d["criteria"][0].__setitem__("measured", 0.0)))
    assert not check_bundle(tampered(lambda d: d["thresholds"].__setitem__("max_observation_error", 9.0)))
    assert not check_bundle(tampered(lambda d: d.__setitem__("sha256", "0" * 64)))
    assert not check_bundle(tampered(lambda d: d.__setitem__("schema", "other/v0")))
    assert not check_bundle(text[:-10])
    assert not check_bundle("[]")


def test_canonical_json_is_documented_form():
    text = canonical_json({"b": [1.0 / 3.0, float("nan"), -0.0, float("inf")], "a": np.int64(3), "c": np.arange(2)})
    assert text == '{"a":3,"b":[0.333333333333,null,0.0,null],"c":[0,1]}'
    assert canonical_json(1.23456789012345678) == "1.23456789012"
    with pytest.raises(TypeError, match="canonical JSON"):
        canonical_json({"x": object()})


def test_failed_criterion_without_events_fails_the_bundle(clean_events):
    nan = np.full(len(clean_events), np.nan)
    bundle = verify(replace(clean_events, dynamics_error=nan, dynamics_source="none"))
    assert bundle.status == "FAILED"
    dynamics = bundle.criterion("dynamics")
    assert dynamics.status == "FAILED" and dynamics.reason == "no finite event" and math.isnan(dynamics.measured)
    assert check_bundle(bundle.to_json())
    assert TransferEvents.from_dict(json.loads(bundle.to_json())["events"]).dynamics_source == "none"


def test_bad_inputs(pair):
    real, reference = pair
    later = StepLog(reference.step_id + 10_000, reference.t_us, reference.groups, reference.joint_names)
    with pytest.raises(VerificationError, match="only 0 step ids are common"):
        transfer_events(real, later)
    with pytest.raises(ValueError, match="window_steps must be an int >= 2"):
        transfer_events(real, reference, window_steps=1)
    with pytest.raises(VerificationError, match="no common observation group"):
        transfer_events(StepLog(real.step_id, real.t_us, {"command": real.group("command")}), reference)
    with pytest.raises(VerificationError, match="replay has 19 joints"):
        replay = StepLog(real.step_id, real.t_us, {"joint_angles": real.group("joint_angles")[:, :19]})
        transfer_events(real, reference, replay=replay)
    with pytest.raises(ValueError, match="quantile must be in"):
        VerificationThresholds(quantile=1.5)
    with pytest.raises(ValueError, match="observation_error has shape"):
        TransferEvents(np.arange(3), np.zeros(2), np.zeros(3), np.zeros(3), np.zeros(3), "model", 2, 0.02, ())


def test_verify_imports_without_simulation_packages():
    code = (
        "import sys\n"
        "for name in ('ksim', 'mujoco', 'jax', 'xax'): sys.modules[name] = None\n"
        "import ksim_entropy.bridge.verify\n"
        "heavy = sorted(m for m, mod in sys.modules.items() if mod is not None\n"
        "               and m.split('.')[0] in {'ksim', 'mujoco', 'xax', 'jax', 'kinfer', 'onnx'})\n"
        "assert not heavy, heavy\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
