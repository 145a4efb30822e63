"""Why does the policy that works in simulation fail on the robot? Ranked findings from a real and a sim step log.

`diagnose(real, sim)` compares two `StepLog`s of the same setup (same robot, policy or motion script, command
distribution; the logs need not be time-aligned) and returns a `Diagnosis`: ranked `Finding`s, each with the
channels it blames, a severity, the evidence numbers and a message, plus the headline statistic of every detector
(also when it found nothing, so margins can be read) and the detectors it had to skip, with the reason.

The detectors run in an order that explains effects away, so that one fault yields one finding:

1. **swapped_channels** (wiring). For every real channel and every sim channel of the same family (IMU:
   projected_g/accel/gyro; joint state: joint_angles/joint_vels; output) the cost ``d = W1 / max(σ_real, σ_sim)``
   (1-Wasserstein distance of the marginals over the larger spread, floors in `SCALE_FLOORS`) says how unlike the
   two are. Whole groups: real A and B are swapped when ``Σ d(A→B, B→A)`` is `swap_min_cost_ratio` times smaller
   than ``Σ d(A→A, B→B)`` and the identity costs at least `swap_min_cost` per channel (the numbers of a gyroscope,
   ≈ 0 rad/s, are no accelerometer's, |a| ≈ 9.81 m/s²). Single channels (a joint order or IMU axis mix-up): an
   optimal assignment (Hungarian) inside each group; a cycle of channels counts when each of them costs at least
   `swap_min_cost` as itself and `swap_min_cost_ratio` times less as its partner. Channels that are alike (two
   joints with equal distributions) cannot be told apart and are never reported.
2. **misscaled_channels** (units). Per channel, the factor k of ``Q_real(p) ≈ k·Q_sim(p)`` (least squares over 99
   quantiles, through the origin: a unit error multiplies location and spread alike) and the fit's residual over
   the real spread. A well-fitting k with |k| ≥ `scale_min_factor` (or ≤ its inverse) is a unit error only when
   confirmed: the channel sits away from zero in both logs (so location and spread both scaled), or its relation
   to a physically tied channel of the same log changed by the same factor (joint angle vs its output, joint
   velocity vs the angle's central difference, |accel| vs |projected_g|). A zero-mean channel that merely moves
   less (a collapsed policy, weaker motion) keeps those relations and is not a unit error. The group's other
   channels with an agreeing k join (a unit is per group); all are divided by the named unit factor (180/π, 1/g,
   1000, 2π, ...) when the group's median k is within `scale_name_tolerance` of one. An offset, a collapse to a
   constant or a change of waveform fits badly and is left to the detectors below.
   **sensor_noise** (sensors). Per channel of joint_angles and the IMU groups, the white-noise std of each log:
   the nugget ``γ0 - (2γ1 - γ2)`` of its autocovariance (white noise adds to lag 0 only; a signal smooth at the
   control rate has ``γ0 ≈ 2γ1 - γ2``), for a joint angle of what its FIR model on past outputs leaves unexplained
   (the dithered PD response is not smooth, its residual is). A channel whose std differs by `noise_std_ratio`
   (each floored at `NOISE_FLOORS`, above the estimate's model error on noise-free logs) is named, and the quieter
   log's copy gets white noise of the missing std, so that the detectors below compare equally noisy data: noise
   left in a velocity (a regressor of the response model *and* its target) otherwise reads as a weaker, more damped
   joint. Joint velocities are not judged: at 50 Hz with a dither their physics is itself white.
3. **temporal_mismatch** (timing). Loop timing from ``t_us`` and ``step_id``: the median period ratio, the
   jitter (robust std of the intervals over the period), the fraction of late intervals (> 1.5 periods) and of
   dropped step ids, each in excess of the sim log's. Loop latency at sub-step resolution: per joint, the sim's
   velocity-change kernel (its response to outputs over `_KERNEL_LAGS` steps, at the sim's own whole-step delay
   from `fit_response_model`) is fed the real outputs delayed by 0..`max_delay_steps` steps on a 1/20-step grid
   (1 ms at 50 Hz; a partly held output weighted by the step's response shape, see `_delayed_input`); the real
   joint is late when its best delay exceeds the sim's, that gains at least `delay_min_r2_gain` of explained
   variance, and the sim's FIR response fits the real angle better with the outputs shifted by it (unbiased by
   sensor noise). Measured on the stand-in (8 s): 40, 60 ms exact within 2 ms; 15 and 30 ms read 3-6 ms low.
   A real log that responds *earlier* than the sim is never a cause (the sim's own latency setting; noted in
   `skipped`). Open-loop logs show only the loop latency, action + observation: a kinfer log has one timestamp per
   step, and the stand-in writes byte-identical logs for any split of a constant sum. Joints that settle within a
   control step (wrists) are timed in whole steps. The cross-correlation lag of output and joint angle is reported
   too, but not used to decide: it mixes delay with actuator bandwidth (weaker PD gains lag more without delay).
4. **dynamics_mismatch** (physics). Each log's response model at its own delay (a late joint: the sim's kernel at the
   real's fractional delay; a fast joint with a sub-step latency on the others is not judged); the sim's slopes
   (output gain, position and velocity feedback; each log keeps its own intercept, so sensor offsets do not count)
   predict the real velocity changes. The statistic is the fraction of the real variance lost against the real
   model's own fit, ``(RSS_cross - RSS_own) / TSS``. A joint counts only if its angle's response to past outputs (FIR on
   u_{t-1..t-15}, unbiased by white sensor noise, which is only in its target) changed too: the sim coefficients lose at
   least `dynamics_response_loss` of the real angle's explained variance; joints cleared this way are listed in
   `skipped` (sensor noise, not physics). With `replay` (the real outputs replayed open-loop in simulation from the real
   start, `ksim_entropy.sim2real.sim_logs.replay_open_loop`), also the RMS joint-angle error between real and replay
   over the first `replay_steps` steps (after removing the median offset and the delay found in 3), over the real
   joint's motion std.
5. **observation_mismatch** (sensors). Per observation channel, ``W1 / σ_sim`` and the KS statistic, both large,
   on channels whose *commanded* motion matches (each joint's output ``W1 / σ_sim`` below `command_match`; for IMU
   channels the median over outputs): the sensor reads a different distribution for the same motion. For joint
   angles also the reading offset the response models imply: a constant offset δ of the angle reading leaves every
   slope and moves the intercept by ``-g_q·δ``, so ``δ = -(c_real - c_sim) / g_q`` with the real intercept refitted
   under the sim's slopes (≈ 1e-4 rad precision on 30 s of data). Joints with a dynamics finding are left out:
   their angles differ because the physics does.
6. **overconfident_policy** (policy). The change of the output's Gaussian entropy per joint,
   ``ΔH = log(σ_real / σ_sim)`` nats; a policy whose actions collapse on real observations has ``median ΔH ≤
   -entropy_drop_nats``.

Wiring, unit and noise findings are corrected in copies of the logs before steps 3-6 (``Diagnosis.corrections`` lists
what was changed) and rank first: every other number is read after them. The rest rank by severity,
``1 - threshold / statistic`` (0 at the threshold, 0.5 at twice it, → 1). Default thresholds leave at least 2×
margin on clean simulated pairs of different seeds (see `DiagnosisThresholds`; tests/bridge/test_diagnose.py).

Pure NumPy/SciPy: this module never imports ksim, mujoco, jax or xax.
"""

from types import MappingProxyType

from ksim_entropy.bridge.diagnose.core import (
    FINDING_KINDS,
    NOISE_FLOORS,
    SCALE_FLOORS,
    Channels,
    Diagnosis,
    DiagnosisError,
    DiagnosisThresholds,
    Finding,
)
from ksim_entropy.bridge.diagnose.dynamics import compare_models, detect_dynamics
from ksim_entropy.bridge.diagnose.noise import detect_noise
from ksim_entropy.bridge.diagnose.observation import detect_observation
from ksim_entropy.bridge.diagnose.policy import detect_overconfident
from ksim_entropy.bridge.diagnose.randomizers import RandomizerPointer, pointed_randomizers
from ksim_entropy.bridge.diagnose.response import (
    ResponseModel,
    dense_of,
    fit_response_model,
    response_model,
    response_residuals,
    velocity_source,
)
from ksim_entropy.bridge.diagnose.temporal import detect_temporal
from ksim_entropy.bridge.diagnose.units import detect_scale
from ksim_entropy.bridge.diagnose.wiring import detect_swaps
from ksim_entropy.formats.schema import JOINT_GROUPS, StepLog

__all__ = [
    "FINDING_KINDS",
    "NOISE_FLOORS",
    "SCALE_FLOORS",
    "Diagnosis",
    "DiagnosisError",
    "DiagnosisThresholds",
    "Finding",
    "RandomizerPointer",
    "ResponseModel",
    "diagnose",
    "fit_response_model",
    "pointed_randomizers",
    "response_residuals",
]


_STRUCTURAL = ("swapped_channels", "misscaled_channels", "sensor_noise")  # corrected before the later detectors


def _check_inputs(real: StepLog, sim: StepLog, replay: StepLog | None, th: DiagnosisThresholds) -> None:
    for name, log in (("real", real), ("sim", sim), ("replay", replay)):
        if log is None:
            continue
        if not isinstance(log, StepLog):
            raise DiagnosisError(f"{name} must be a StepLog, got {type(log).__name__}")
        if name != "replay" and len(log) < th.min_steps:
            raise DiagnosisError(f"{name} log has {len(log)} steps; diagnosis needs >= {th.min_steps} (min_steps)")
    for group in JOINT_GROUPS:
        if group in real.groups and group in sim.groups:
            wr, ws = real.group(group).shape[1], sim.group(group).shape[1]
            if wr != ws:
                raise DiagnosisError(f"{group} has {wr} joints in the real log but {ws} in the sim log")
    if real.joint_names is not None and sim.joint_names is not None and real.joint_names != sim.joint_names:
        raise DiagnosisError(
            f"the logs name different joints (or orders): real {real.joint_names} vs sim {sim.joint_names}"
        )
    if not set(real.groups) & set(sim.groups):
        raise DiagnosisError(f"no common channel group: real has {list(real.groups)}, sim has {list(sim.groups)}")
    if replay is not None:
        if "joint_angles" not in replay.groups or "joint_angles" not in real.groups:
            raise DiagnosisError(f"replay and real logs need joint_angles (replay has {list(replay.groups)})")
        wp, wr = replay.group("joint_angles").shape[1], real.group("joint_angles").shape[1]
        if wp != wr:
            raise DiagnosisError(f"replay has {wp} joints, the real log {wr}")


def _without_empty_groups(log: StepLog, side: str, skipped: dict[str, str]) -> StepLog:
    """`log` less its zero-width groups (e.g. `command: []` of a policy without commands): they hold no channel."""
    empty = [name for name, block in log.groups.items() if block.shape[1] == 0]
    if not empty:
        return log
    skipped[f"empty_groups:{side}"] = f"{', '.join(empty)}: no value in the {side} log (0 wide), treated as absent"
    groups = {name: block for name, block in log.groups.items() if name not in empty}
    return StepLog(log.step_id, log.t_us, groups, log.joint_names, log.source)


def diagnose(
    real: StepLog,
    sim: StepLog,
    *,
    replay: StepLog | None = None,
    thresholds: DiagnosisThresholds | None = None,
) -> Diagnosis:
    """Name what differs between a real and a sim log of the same setup, with evidence; see the module docstring.

    `replay`: optional, the real log's outputs replayed open-loop in simulation from its first state. Raises
    `DiagnosisError` for logs that cannot be compared (too short, different joints, nothing in common); detectors
    that lack the groups they need are listed in `Diagnosis.skipped` with the reason.
    """
    th = thresholds if thresholds is not None else DiagnosisThresholds()
    skipped: dict[str, str] = {}
    if isinstance(real, StepLog) and isinstance(sim, StepLog):
        real, sim = _without_empty_groups(real, "real", skipped), _without_empty_groups(sim, "sim", skipped)
    _check_inputs(real, sim, replay, th)
    real_ch, sim_ch = Channels.of(real), Channels.of(sim)
    findings: list[Finding] = []
    statistics: dict[str, dict[str, float]] = {}
    corrections: dict[str, str] = {}

    for kind, detect in (
        ("swapped_channels", detect_swaps),
        ("misscaled_channels", detect_scale),
        ("sensor_noise", detect_noise),
    ):
        finding, statistics[kind], fixed = detect(real_ch, sim_ch, th)
        corrections |= fixed
        findings += [finding] if finding is not None else []

    joint_groups = ("joint_angles", "output")
    models = dense = None
    if all(g in real_ch.blocks and g in sim_ch.blocks for g in joint_groups):
        if real_ch.blocks["joint_angles"].shape[1] != real_ch.blocks["output"].shape[1]:
            skipped["dynamics_mismatch"] = "joint_angles and output have different widths"
        else:
            try:
                velocity = velocity_source(real, sim)
                dense = (dense_of(real_ch, velocity), dense_of(sim_ch, velocity))
            except DiagnosisError as err:
                skipped["dynamics_mismatch"] = str(err)
            else:
                models = (
                    response_model(dense[0], th.max_delay_steps, velocity),
                    response_model(dense[1], th.max_delay_steps, velocity),
                )
    else:
        skipped["dynamics_mismatch"] = f"needs {list(joint_groups)} in both logs"
    if models is None:
        skipped["temporal_mismatch:delay"] = skipped["dynamics_mismatch"]

    finding, statistics["temporal_mismatch"], loop = detect_temporal(real_ch, sim_ch, models, dense, th, skipped)
    findings += [finding] if finding is not None else []

    excluded: set[int] = set()
    comparison = None
    if models is not None and dense is not None:
        comparison, excitation = compare_models(models, dense, th, loop)
        finding, statistics["dynamics_mismatch"], excluded = detect_dynamics(
            real_ch, models, dense, comparison, excitation, replay, th, skipped
        )
        findings += [finding] if finding is not None else []

    finding, statistics["observation_mismatch"] = detect_observation(real_ch, sim_ch, comparison, excluded, th, skipped)
    findings += [finding] if finding is not None else []

    if "output" in real_ch.blocks and "output" in sim_ch.blocks:
        finding, statistics["overconfident_policy"] = detect_overconfident(real_ch, sim_ch, th)
        findings += [finding] if finding is not None else []
    else:
        skipped["overconfident_policy"] = "needs the output group in both logs"

    findings.sort(key=lambda f: (f.kind not in _STRUCTURAL, -f.severity, FINDING_KINDS.index(f.kind)))
    return Diagnosis(
        findings=tuple(findings),
        statistics=MappingProxyType({k: MappingProxyType(v) for k, v in statistics.items()}),
        skipped=MappingProxyType(skipped),
        corrections=MappingProxyType(corrections),
        thresholds=th,
    )
