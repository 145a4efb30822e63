"""Pushes and wind on real MuJoCo/MJX physics, each checked against an independent oracle.

- Dynamics: a free rigid body (mass 2 kg, isotropic inertia 0.1 kg·m², no gravity, no contacts) stepped with
  mjx.step, the events called before each physics step exactly as ksim's engine does. MuJoCo's Euler integrator is
  semi-implicit: v_{k+1} = v_k + dt·F/m, x_{k+1} = x_k + dt·v_{k+1}, so n steps of a constant force F give
  v_n = F·n·dt/m and x_n = F·dt²·n(n+1)/(2m) (explicit Euler would give n(n-1)/2: 0.8% off at n = 250).
- Distributions: Kolmogorov–Smirnov (scipy.stats) against the declared uniforms, Rayleigh's test for angles,
  Archimedes' theorem for axes on the sphere (the z-component of a uniform unit vector is U(-1, 1)), and scipy's
  sample-based differential entropy against the closed forms.
- Integration: both events inside ksim's real MJX engine on the real K-Bot.
"""

import math

import jax
import jax.numpy as jnp
import ksim
import mujoco
import numpy as np
import pytest
import scipy.integrate
import scipy.stats
from mujoco import mjx

import ksim_entropy  # noqa: F401  (configures headless rendering before anything imports mujoco's GL)
from ksim_entropy.events import (
    ForcePushEvent,
    PushState,
    UprightAssistEvent,
    WindEvent,
    WindState,
    resolve_body_id,
)
from ksim_entropy.kbot.robot import load_robot_model, resolve_robot_files

MASS_KG = 2.0
INERTIA_KGM2 = 0.1
DT_S = 0.002
FREE_BODY_XML = f"""
<mujoco>
  <option gravity="0 0 0" timestep="{DT_S}" integrator="Euler"/>
  <worldbody>
    <body name="marker" pos="1 0 0"><geom type="sphere" size="0.05" contype="0" conaffinity="0"/></body>
    <body name="puck">
      <freejoint/>
      <inertial pos="0 0 0" mass="{MASS_KG}" diaginertia="{INERTIA_KGM2} {INERTIA_KGM2} {INERTIA_KGM2}"/>
      <geom type="sphere" size="0.1" contype="0" conaffinity="0"/>
    </body>
  </worldbody>
</mujoco>
"""
HINGE_ONLY_XML = """
<mujoco>
  <worldbody>
    <body name="arm"><joint type="hinge"/><geom type="capsule" size="0.02" fromto="0 0 0 0.3 0 0"/></body>
  </worldbody>
</mujoco>
"""
P_MIN = 1e-3  # significance for the distribution tests (fixed seeds, so each verdict is deterministic)


@pytest.fixture(scope="module")
def free_body():
    mj = mujoco.MjModel.from_xml_string(FREE_BODY_XML)
    return mj, mjx.put_model(mj), mujoco.mj_name2id(mj, mujoco.mjtObj.mjOBJ_BODY, "puck")


_mjx_step = jax.jit(mjx.step)  # compiled once per model and shared by every test (MJX compiles take seconds on CPU)


def simulate(mx, events, n_steps, *, seed=0, level=1.0, physics=True):
    """Initial states, then n_steps of (events → mjx.step), the events called before each physics step as in ksim.

    Returns the initial states and, per step, xfrc_applied as physics used it, qvel and qpos after the step, and the
    event states. With physics=False the events run on the data without stepping it, in one jitted scan (fast, for
    long timing runs); with physics=True a Python loop alternates a jitted event step with the shared `_mjx_step`.
    """
    items = list(events.items())

    def apply_events(data, states, key):
        new = {}
        for (name, ev), k in zip(items, jax.random.split(key, len(items)), strict=True):
            data, new[name] = ev(mx, data, states[name], jnp.float32(level), k)
        return data, new

    state_rng, step_rng = jax.random.split(jax.random.PRNGKey(seed))
    keys = jax.random.split(state_rng, len(items))
    states0 = {name: ev.get_initial_event_state(k) for (name, ev), k in zip(items, keys, strict=True)}
    step_keys = jax.random.split(step_rng, n_steps)
    data = mjx.make_data(mx)
    if not physics:

        def step(carry, key):
            data, states = apply_events(*carry, key)
            return (data, states), {"xfrc": data.xfrc_applied, "qvel": data.qvel, "qpos": data.qpos, "state": states}

        _, out = jax.jit(lambda c, k: jax.lax.scan(step, c, k))((data, states0), step_keys)
        return views(events, states0, out)
    apply_events = jax.jit(apply_events)
    states, records = states0, []
    for key in step_keys:
        data, states = apply_events(data, states, key)
        xfrc = data.xfrc_applied
        data = _mjx_step(mx, data)
        records.append({"xfrc": xfrc, "qvel": data.qvel, "qpos": data.qpos, "state": states})
    return views(events, states0, jax.tree.map(lambda *x: jnp.stack(x), *records))


def view(event, packed):
    """The named view (PushState / WindState) of a packed event state, as numpy."""
    return (PushState if isinstance(event, ForcePushEvent) else WindState).unpack(np.asarray(packed))


def views(events, states0, out):
    states0, out = jax.device_get((states0, out))
    out["state"] = {name: view(ev, out["state"][name]) for name, ev in events.items()}
    return {name: view(ev, states0[name]) for name, ev in events.items()}, out


def on_runs(on):
    """(start, length) of each run of True in a 1-D bool array."""
    edges = np.diff(np.concatenate([[0], on.astype(int), [0]]))
    starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
    return list(zip(starts, ends - starts, strict=True))


# ----------------------------------------------------------------------------------------------- dynamics
def test_wind_velocity_and_position_follow_the_semi_implicit_euler_impulse(free_body):
    _, mx, body = free_body
    wind = WindEvent(body_id=body, max_force_n=30.0)
    n = 250
    states0, out = simulate(mx, {"wind": wind}, n, seed=3)
    force = np.asarray(states0["wind"].force, dtype=np.float64)
    assert 1.0 < np.linalg.norm(force) <= 30.0 and force[2] == 0.0

    # the applied wrench is the state's sampled force, every step, on this body only
    np.testing.assert_array_equal(out["xfrc"][:, body, :3], np.broadcast_to(force.astype(np.float32), (n, 3)))
    assert not out["xfrc"][:, body, 3:].any() and not np.delete(out["xfrc"], body, axis=1).any()
    np.testing.assert_array_equal(out["state"]["wind"].last_wrench[:, :3], out["xfrc"][:, body, :3])

    k = np.arange(1, n + 1)[:, None]
    v_expected = force * k * DT_S / MASS_KG
    x_expected = force * DT_S**2 * k * (k + 1) / (2 * MASS_KG)
    np.testing.assert_allclose(out["qvel"][:, :3], v_expected, rtol=2e-5, atol=1e-7)
    np.testing.assert_allclose(out["qpos"][:, :3], x_expected, rtol=2e-5, atol=1e-6)
    # a force through the COM: no spin (float32 round-off of a ~1 m/s state is ~1e-7)
    np.testing.assert_allclose(out["qvel"][:, 3:], 0.0, atol=1e-6)


def test_push_impulse_matches_force_times_on_steps_and_the_row_returns_to_exactly_zero(free_body):
    _, mx, body = free_body
    # one push: onset at 0.35 s, lasting 0.1-0.3 s; the next onset (0.70 s) lies beyond the 0.68 s horizon
    push = ForcePushEvent(body_id=body, interval_s=(0.35, 0.35), duration_s=(0.1, 0.3))
    n = 340
    _, out = simulate(mx, {"push": push}, n, seed=7)
    row = out["xfrc"][:, body]
    runs = on_runs(np.any(row != 0.0, axis=1))
    assert len(runs) == 1
    start, count = runs[0]
    assert start == math.ceil(0.35 / DT_S)  # the first step whose countdown 0.35 - k·dt reaches 0
    wrench = np.asarray(out["state"]["push"].wrench[start], dtype=np.float64)
    tau = float(out["state"]["push"].remaining_s[start]) + DT_S  # drawn duration (state after one decrement)
    assert 0.1 <= tau <= 0.3 and tau / DT_S - 1e-3 <= count <= tau / DT_S + 1 + 1e-3
    np.testing.assert_array_equal(row[start : start + count], np.broadcast_to(wrench.astype(np.float32), (count, 6)))
    assert wrench[2] == 0.0 and 0 < np.linalg.norm(wrench[:2]) <= 200.0 and 0 < np.linalg.norm(wrench[3:]) <= 10.0

    # after the push: the row is exactly zero again, and the body coasts with the momentum the push gave it
    assert np.array_equal(row[start + count :], np.zeros_like(row[start + count :]))
    v_expected = wrench[:3] * count * DT_S / MASS_KG
    # atol: float32 spacing at |v| ~ 5 m/s is ~5e-7 m/s (the z component is zero up to rounding)
    np.testing.assert_allclose(out["qvel"][-1, :3], v_expected, rtol=1e-5, atol=1e-6)
    # isotropic inertia, torque fixed in the world: the body spins about the torque axis, so R^T τ = τ and the
    # body-frame angular velocity is τ·count·dt/I
    np.testing.assert_allclose(out["qvel"][-1, 3:], wrench[3:] * count * DT_S / INERTIA_KGM2, rtol=1e-4, atol=1e-6)


def test_push_and_wind_on_the_same_body_add_up_and_only_the_wind_remains(free_body):
    _, mx, body = free_body
    push = ForcePushEvent(body_id=body, interval_s=(0.1, 0.2), duration_s=(0.02, 0.06))
    wind = WindEvent(body_id=body, max_force_n=20.0)
    n = 500
    states0, out = simulate(mx, {"push": push, "wind": wind}, n, seed=11)
    row = out["xfrc"][:, body].astype(np.float64)
    push_w = out["state"]["push"].last_wrench.astype(np.float64)
    wind_w = out["state"]["wind"].last_wrench.astype(np.float64)
    force = np.asarray(states0["wind"].force, dtype=np.float64)
    np.testing.assert_array_equal(wind_w[:, :3], np.broadcast_to(force, (n, 3)))

    # every step: the row is the sum of both events' wrenches (float32 rounding of the running sum)
    np.testing.assert_allclose(row, push_w + wind_w, rtol=0, atol=1e-4)
    on = np.any(push_w != 0.0, axis=1)
    runs = on_runs(on)
    assert len(runs) >= 3 and (~on).sum() > 100
    # pushes off: only the wind remains; the residue is float32 rounding of (w + p) - p, far below 1 mN
    residue = np.abs(row[~on] - wind_w[~on]).max()
    assert residue < 1e-4, residue
    np.testing.assert_allclose(row[~on, :3], np.broadcast_to(force, ((~on).sum(), 3)), rtol=0, atol=1e-4)

    # momentum: (wind·n + Σ pushes·on-steps)·dt / m, from the states' draws (not from the xfrc row)
    impulse = force * n * DT_S
    for start, count in runs:
        impulse += out["state"]["push"].wrench[start, :3].astype(np.float64) * count * DT_S
    np.testing.assert_allclose(out["qvel"][-1, :3], impulse / MASS_KG, rtol=1e-4, atol=1e-6)


def test_events_run_on_cpu_mujoco_data_too(free_body):
    """ksim's `mujoco` engine hands events a mujoco.MjData (mutated in place); mj_step then integrates the sum."""
    mj, _, body = free_body
    push = ForcePushEvent(body_id=body, interval_s=(0.0, 0.01), duration_s=(0.5, 0.5), max_torque_nm=0.0)
    wind = WindEvent(body_id=body, max_force_n=20.0)
    data = mujoco.MjData(mj)
    ps, ws = push.get_initial_event_state(jax.random.PRNGKey(1)), wind.get_initial_event_state(jax.random.PRNGKey(2))
    assert ps.shape == (14,) and ws.shape == (9,) and ps.dtype == ws.dtype == jnp.float32  # ksim: states are arrays
    total = np.zeros(3)
    for k in range(5):
        data, ps = push(mj, data, ps, jnp.float32(1.0), jax.random.PRNGKey(10 + k))
        data, ws = wind(mj, data, ws, jnp.float32(1.0), jax.random.PRNGKey(20 + k))
        last = view(push, ps).last_wrench + view(wind, ws).last_wrench
        np.testing.assert_allclose(data.xfrc_applied[body], last, atol=1e-4)
        total += data.xfrc_applied[body, :3]
        mujoco.mj_step(mj, data)
    assert np.any(view(push, ps).last_wrench != 0.0)  # the push started within the first 0.01 s and lasts 0.5 s
    np.testing.assert_allclose(data.qvel[:3], total * DT_S / MASS_KG, rtol=1e-6)


def test_curriculum_level_scales_the_applied_wrench_only_when_asked(free_body):
    _, mx, body = free_body
    for scale, expected in ((True, 0.25), (False, 1.0)):
        wind = WindEvent(body_id=body, max_force_n=50.0, scale_with_curriculum=scale)
        states0, out = simulate(mx, {"wind": wind}, 3, seed=5, level=0.25, physics=False)
        force = np.asarray(states0["wind"].force)
        np.testing.assert_allclose(out["xfrc"][-1, body, :3], expected * force, rtol=1e-6)
        np.testing.assert_array_equal(out["state"]["wind"].force[-1], force)  # the state keeps the unscaled draw
        assert wind.magnitude_range_n(0.25) == (0.0, 50.0 * expected)
        assert wind.entropy_nats(0.25) == pytest.approx(math.log(50.0 * expected) + math.log(2 * math.pi))


def test_wind_gusts_are_white_gaussian_with_the_given_std_in_newtons(free_body):
    _, mx, body = free_body
    wind = WindEvent(body_id=body, max_force_n=10.0, gust_std_n=3.0)
    states0, out = simulate(mx, {"wind": wind}, 4000, seed=9, physics=False)
    gust = out["xfrc"][:, body, :2].astype(np.float64) - np.asarray(states0["wind"].force[:2])
    assert not out["xfrc"][:, body, 2:].any()
    for axis in range(2):
        assert scipy.stats.kstest(gust[:, axis], "norm", args=(0.0, 3.0)).pvalue > P_MIN
        assert abs(np.corrcoef(gust[:-1, axis], gust[1:, axis])[0, 1]) < 0.06  # independent across steps
    assert wind.gust_entropy_nats_per_step() == pytest.approx(math.log(2 * math.pi * math.e * 9.0))
    # the xfrc row tracks each step's gust exactly, not the sum of past gusts
    np.testing.assert_allclose(out["xfrc"][:, body], out["state"]["wind"].last_wrench, atol=1e-4)


# ----------------------------------------------------------------------------------------------- distributions
def test_wind_reset_state_has_zero_last_wrench_and_uniform_magnitude_and_direction():
    wind = WindEvent(max_force_n=20.0)
    packed = jax.vmap(wind.get_initial_event_state)(jax.random.split(jax.random.PRNGKey(0), 4000))
    states = WindState.unpack(packed)
    np.testing.assert_array_equal(states.pack(), packed)  # pack ∘ unpack is the identity
    assert not np.asarray(states.last_wrench).any()
    force = np.asarray(states.force, dtype=np.float64)
    assert not force[:, 2].any()
    magnitude, angle = np.linalg.norm(force[:, :2], axis=1), np.arctan2(force[:, 1], force[:, 0])
    assert scipy.stats.kstest(magnitude, "uniform", args=(0.0, 20.0)).pvalue > P_MIN
    assert scipy.stats.kstest(angle, "uniform", args=(-np.pi, 2 * np.pi)).pvalue > P_MIN
    rayleigh_z = len(angle) * np.abs(np.mean(np.exp(1j * angle))) ** 2  # P(Z > z) ≈ exp(-z) under uniformity
    assert math.exp(-rayleigh_z) > P_MIN
    # the closed form h = log F + log 2π against scipy's sample estimates of the two independent coordinates
    estimate = scipy.stats.differential_entropy(magnitude) + scipy.stats.differential_entropy(angle)
    assert estimate == pytest.approx(wind.entropy_nats(), abs=0.05)
    assert wind.entropy_nats() == pytest.approx(math.log(20.0) + math.log(2 * math.pi))


def test_push_draws_follow_the_declared_uniforms():
    push = ForcePushEvent()  # kbot-joystick defaults, interval from 1 s
    mx = mjx.put_model(mujoco.MjModel.from_xml_string(FREE_BODY_XML))
    data = mjx.make_data(mx)
    packed = jax.vmap(push.get_initial_event_state)(jax.random.split(jax.random.PRNGKey(1), 4000))
    initial = PushState.unpack(packed)
    np.testing.assert_array_equal(initial.pack(), packed)
    assert not np.asarray(initial.last_wrench).any() and not np.asarray(initial.remaining_s).any()
    assert scipy.stats.kstest(np.asarray(initial.countdown_s), "uniform", args=(1.0, 5.0)).pvalue > P_MIN

    # force an onset (countdown 0) and read back what one step draws and writes
    onset = initial._replace(countdown_s=jnp.zeros_like(initial.countdown_s)).pack()

    def one_step(state, rng):
        out, new = push(mx, data, state, jnp.float32(1.0), rng)
        return out.xfrc_applied[push.body_id], new

    row, new = jax.vmap(one_step)(onset, jax.random.split(jax.random.PRNGKey(2), 4000))
    new = PushState.unpack(new)
    row = np.asarray(row, dtype=np.float64)
    np.testing.assert_array_equal(row, np.asarray(new.last_wrench))
    force, torque = row[:, :3], row[:, 3:]
    f_mag, f_angle = np.linalg.norm(force, axis=1), np.arctan2(force[:, 1], force[:, 0])
    t_mag = np.linalg.norm(torque, axis=1)
    axis = torque / t_mag[:, None]
    duration = np.asarray(new.remaining_s, dtype=np.float64) + DT_S
    interval = np.asarray(new.countdown_s, dtype=np.float64) + DT_S
    assert not force[:, 2].any()
    for sample, args in (
        (f_mag, (0.0, 200.0)),
        (f_angle, (-np.pi, 2 * np.pi)),
        (t_mag, (0.0, 10.0)),
        (axis[:, 2], (-1.0, 2.0)),  # Archimedes: z of a uniform direction on the sphere is U(-1, 1)
        (np.arctan2(axis[:, 1], axis[:, 0]), (-np.pi, 2 * np.pi)),
        (duration, (0.1, 0.4)),
        (interval, (1.0, 5.0)),
    ):
        assert scipy.stats.kstest(sample, "uniform", args=args).pvalue > P_MIN

    # closed form (polar force, magnitude × sphere-axis torque, duration, interval) against sample estimates;
    # the axis term log 4π is the entropy of z ~ U(-1, 1) plus azimuth ~ U(0, 2π) (area element dz dφ)
    terms = push.entropy_terms_nats()
    estimates = {
        "force_magnitude": scipy.stats.differential_entropy(f_mag),
        "force_angle": scipy.stats.differential_entropy(f_angle),
        "torque_magnitude": scipy.stats.differential_entropy(t_mag),
        "torque_axis": scipy.stats.differential_entropy(axis[:, 2])
        + scipy.stats.differential_entropy(np.arctan2(axis[:, 1], axis[:, 0])),
        "duration": scipy.stats.differential_entropy(duration),
        "interval": scipy.stats.differential_entropy(interval),
    }
    assert terms.keys() == estimates.keys()
    for name, estimate in estimates.items():
        assert terms[name] == pytest.approx(estimate, abs=0.05), name
    assert push.entropy_nats() == pytest.approx(sum(terms.values()))
    expected = sum(map(math.log, (200.0, 2 * math.pi, 10.0, 4 * math.pi, 0.4, 5.0)))
    assert push.entropy_nats() == pytest.approx(expected)
    # torque pushes switched off: no torque drawn, no torque terms
    assert set(ForcePushEvent(max_torque_nm=0.0).entropy_terms_nats()) == {
        "force_magnitude",
        "force_angle",
        "duration",
        "interval",
    }


def test_push_onsets_and_durations_follow_their_uniforms_within_one_physics_step(free_body):
    _, mx, body = free_body
    lo, hi, d_lo, d_hi = 0.2, 0.6, 0.02, 0.1
    push = ForcePushEvent(body_id=body, interval_s=(lo, hi), duration_s=(d_lo, d_hi), max_torque_nm=0.0)
    envs, n = 16, 12_000  # 16 × 24 s of event logic (no physics): ~900 onsets

    rngs = jax.random.split(jax.random.PRNGKey(5), envs)

    def run(rng):
        state0 = push.get_initial_event_state(rng)

        def step(carry, key):
            data, state = carry
            data, state = push(mx, data, state, jnp.float32(1.0), key)
            return (data, state), data.xfrc_applied[body, 0] != 0.0

        _, on = jax.lax.scan(step, (mjx.make_data(mx), state0), jax.random.split(jax.random.fold_in(rng, 1), n))
        return PushState.unpack(state0).countdown_s, on

    first_countdown, on = jax.device_get(jax.jit(jax.vmap(run))(rngs))
    intervals, durations, first_onsets = [], [], []
    for e in range(envs):
        runs = on_runs(on[e])
        starts = np.array([s for s, _ in runs])
        first_onsets.append(starts[0] * DT_S - first_countdown[e])
        intervals.extend(np.diff(starts) * DT_S)
        durations.extend(c * DT_S for s, c in runs if s + c < n)  # drop a push cut off by the horizon
    intervals, durations, first_onsets = map(np.asarray, (intervals, durations, first_onsets))
    assert len(intervals) > 500
    # the first onset is the first physics step at or after the drawn countdown
    assert np.all((first_onsets >= -1e-6) & (first_onsets < DT_S + 1e-6))
    # onset-to-onset: U(lo, hi) up to ±dt of grid quantisation
    assert intervals.min() >= lo - DT_S - 1e-6 and intervals.max() <= hi + DT_S + 1e-6
    assert scipy.stats.kstest(intervals, "uniform", args=(lo, hi - lo)).pvalue > P_MIN
    # durations are ceil(τ/dt)·dt; subtracting an independent U(0, dt) jitter makes them exactly U(d_lo, d_hi)
    jitter = np.random.default_rng(0).uniform(0.0, DT_S, len(durations))
    assert durations.min() >= d_lo - 1e-6 and durations.max() <= d_hi + DT_S + 1e-6
    assert scipy.stats.kstest(durations - jitter, "uniform", args=(d_lo, d_hi - d_lo)).pvalue > P_MIN


# ----------------------------------------------------------------------------------------------- ksim engine
def test_push_and_wind_inside_ksims_mjx_engine_on_the_kbot():
    mj = load_robot_model(resolve_robot_files("local"), scene="smooth")
    mj.opt.timestep = 0.004  # the engine's dt; events read model.opt.timestep
    # The check is the xfrc_applied bookkeeping across the engine's physics sub-steps, which the constraint solver
    # neither reads nor writes; switching it off halves the MJX compile time on CPU.
    mj.opt.disableflags |= int(mujoco.mjtDisableBit.mjDSBL_CONSTRAINT)
    push = ForcePushEvent.create(mj, interval_s=(0.03, 0.05), duration_s=(0.01, 0.02))
    wind = WindEvent.create(mj, gust_std_n=5.0)
    base = push.body_id
    assert base == wind.body_id == 1 and mujoco.mj_id2name(mj, mujoco.mjtObj.mjOBJ_BODY, base) == "base"
    engine = ksim.engine.get_physics_engine(
        "mjx",
        resets=[],
        events={"push": push, "wind": wind},
        actuators=ksim.TorqueActuators(),
        dt=0.004,
        ctrl_dt=0.02,
        action_latency_range=(0.0, 0.0),
        drop_action_prob=0.0,
        actuator_update_dt=None,
    )
    mx = mjx.put_model(mj)
    level = jnp.array(1.0)
    state = engine.reset(mx, level, jax.random.PRNGKey(0))
    assert not np.asarray(state.data.xfrc_applied).any()
    assert not view(push, state.event_states["push"]).last_wrench.any()
    assert not view(wind, state.event_states["wind"]).last_wrench.any()

    action = jnp.zeros(mj.nu)
    push_on = []
    for k in range(10):
        state = engine.step(action, mx, state, level, jax.random.PRNGKey(100 + k))
        xfrc = np.asarray(state.data.xfrc_applied)
        push_w = view(push, state.event_states["push"]).last_wrench
        wind_w = view(wind, state.event_states["wind"]).last_wrench
        np.testing.assert_allclose(xfrc[base], push_w + wind_w, rtol=0, atol=1e-4)
        assert not np.delete(xfrc, base, axis=0).any()
        assert np.linalg.norm(wind_w[:3]) > 0.0
        push_on.append(bool(np.any(push_w != 0.0)))
    # pushes of 10-20 ms every 30-50 s: over 0.2 s some control steps end inside a push and some between pushes
    assert any(push_on) and not all(push_on), push_on


# ----------------------------------------------------------------------------------------------- errors
def test_create_resolves_bodies_by_name_and_defaults_to_the_floating_base(free_body):
    mj, mx, body = free_body
    assert ForcePushEvent.create(mj).body_id == body == resolve_body_id(mx)
    assert WindEvent.create(mx, body_name="marker", max_force_n=5.0).body_id == 1
    with pytest.raises(ValueError, match=r"'pluck' not found.*'puck'"):
        ForcePushEvent.create(mj, body_name="pluck")
    with pytest.raises(ValueError, match="world body"):
        WindEvent.create(mj, body_name="world")
    with pytest.raises(ValueError, match="no free joint"):
        WindEvent.create(mujoco.MjModel.from_xml_string(HINGE_ONLY_XML))
    too_far = WindEvent(body_id=7)
    data = mjx.make_data(mx)
    with pytest.raises(ValueError, match="body_id=7 but the model has 3 bodies"):
        too_far(
            mx, data, too_far.get_initial_event_state(jax.random.PRNGKey(0)), jnp.float32(1.0), jax.random.PRNGKey(0)
        )


@pytest.mark.parametrize(
    ("make", "error", "match"),
    [
        (lambda: ForcePushEvent(max_force_n=-1.0), ValueError, "max_force_n must be finite and >= 0"),
        (lambda: ForcePushEvent(max_torque_nm=float("nan")), ValueError, "max_torque_nm must be finite"),
        (lambda: ForcePushEvent(duration_s=(0.5, 0.1)), ValueError, r"duration_s is reversed"),
        (lambda: ForcePushEvent(duration_s=()), ValueError, r"duration_s must be a \(low, high\) pair"),
        (lambda: ForcePushEvent(interval_s=(1.0, 2.0, 3.0)), ValueError, "interval_s must be a"),
        (lambda: ForcePushEvent(interval_s=(-1.0, 2.0)), ValueError, "interval_s must be >= 0"),
        (lambda: ForcePushEvent(interval_s=(0.0, 0.0)), ValueError, "interval_s must have high > 0"),
        (lambda: ForcePushEvent(duration_s=(0.1, float("inf"))), ValueError, "duration_s must be finite"),
        (lambda: ForcePushEvent(duration_s=(float("nan"), 0.2)), ValueError, "duration_s must be finite"),
        (lambda: ForcePushEvent(duration_s=("a", 0.2)), TypeError, "duration_s must hold numbers"),
        (lambda: WindEvent(max_force_n=float("nan")), ValueError, "max_force_n must be finite"),
        (lambda: WindEvent(gust_std_n=-0.5), ValueError, "gust_std_n must be finite and >= 0"),
        (lambda: WindEvent(max_force_n="20"), TypeError, "max_force_n must be a number"),
        (lambda: WindEvent(body_id=0), ValueError, "world body"),
        (lambda: WindEvent(body_id=1.0), TypeError, "body_id must be an int"),
        (lambda: WindEvent(scale_with_curriculum=1), TypeError, "scale_with_curriculum"),
        (lambda: WindEvent(scale_with_curriculum=True).entropy_nats(-1.0), ValueError, "curriculum_level"),
        (lambda: ForcePushEvent().magnitude_range_n(float("nan")), ValueError, "curriculum_level"),
    ],
)
def test_bad_inputs_fail_with_clear_errors(make, error, match):
    with pytest.raises(error, match=match):
        make()


def test_degenerate_ranges_are_allowed_and_their_entropy_is_minus_infinity():
    push = ForcePushEvent(duration_s=[0.2, 0.2], interval_s=(2.0, 2.0))
    assert push.duration_s == (0.2, 0.2)  # a list is stored as a tuple, so the event stays hashable for jit
    hash(push)
    assert push.entropy_terms_nats()["duration"] == -math.inf and push.entropy_nats() == -math.inf
    assert WindEvent(max_force_n=0.0).entropy_nats() == -math.inf
    assert WindEvent().gust_entropy_nats_per_step() == -math.inf


# ----------------------------------------------------------------------------------------------- upright assist
def _tilted(mx, theta_rad, omega=(0.0, 0.0, 0.0)):
    data = mjx.make_data(mx)
    quat = jnp.array([math.cos(theta_rad / 2), math.sin(theta_rad / 2), 0.0, 0.0])  # about world x
    data = data.replace(qpos=data.qpos.at[3:7].set(quat), qvel=data.qvel.at[3:6].set(jnp.asarray(omega)))
    return mjx.forward(mx, data)


def test_assist_torque_is_the_spring_on_the_tilt_and_the_damper_on_roll_and_pitch_rates(free_body):
    _, mx, body = free_body
    assist = UprightAssistEvent(body_id=body, stiffness_nm_per_rad=40.0, damping_nms_per_rad=3.0)
    for theta in (0.05, 0.4, 1.2):
        data, last = assist(mx, _tilted(mx, theta), assist.get_initial_event_state(jax.random.PRNGKey(0)), 0.0, None)
        np.testing.assert_allclose(
            np.asarray(data.xfrc_applied[body]), [0, 0, 0, -40.0 * math.sin(theta), 0, 0], atol=1e-5
        )
        np.testing.assert_array_equal(np.asarray(last), np.asarray(data.xfrc_applied[body]))
    # Upright and spinning: the damper acts on roll and pitch rates only, never on the heading.
    data, _ = assist(mx, _tilted(mx, 0.0, omega=(0.5, -0.2, 3.0)), jnp.zeros(6), 0.0, None)
    np.testing.assert_allclose(np.asarray(data.xfrc_applied[body, 3:]), [-1.5, 0.6, 0.0], atol=1e-5)


def test_assist_fades_out_linearly_with_the_curriculum_level(free_body):
    _, mx, body = free_body
    assist = UprightAssistEvent(body_id=body, stiffness_nm_per_rad=10.0, damping_nms_per_rad=0.0, fade_out_level=0.5)
    tilted = _tilted(mx, 0.3)
    for level, fade in ((0.0, 1.0), (0.125, 0.75), (0.25, 0.5), (0.5, 0.0), (1.0, 0.0)):
        assert float(assist.fade(level)) == pytest.approx(fade)
        data, _ = assist(mx, tilted, jnp.zeros(6), jnp.float32(level), None)
        assert float(data.xfrc_applied[body, 3]) == pytest.approx(-10.0 * math.sin(0.3) * fade, abs=1e-5)
    with pytest.raises(ValueError, match="fade_out_level"):
        UprightAssistEvent(fade_out_level=0.0)


def test_assisted_free_body_swings_like_scipys_damped_pendulum(free_body):
    """I·θ'' = −k·sin θ − c·θ' for a tilt about a horizontal axis (no gravity), MJX against scipy's ODE solution."""
    _, mx, body = free_body
    k, c, theta0, n = 2.0, 0.1, 0.3, 500
    assist = UprightAssistEvent(body_id=body, stiffness_nm_per_rad=k, damping_nms_per_rad=c)
    apply = jax.jit(lambda d, s: assist(mx, d, s, jnp.float32(0.0), None))
    data, state, theta = _tilted(mx, theta0), jnp.zeros(6), []
    for _ in range(n):
        data, state = apply(data, state)
        data = _mjx_step(mx, data)
        q = np.asarray(data.qpos[3:7])
        theta.append(2.0 * math.atan2(q[1], q[0]))
    t = DT_S * np.arange(1, n + 1)
    ref = scipy.integrate.solve_ivp(
        lambda _, y: [y[1], (-k * math.sin(y[0]) - c * y[1]) / INERTIA_KGM2],
        (0, t[-1]),
        [theta0, 0.0],
        t_eval=t,
        rtol=1e-9,
        atol=1e-12,
    )
    assert np.min(theta) < -0.2  # it swung through upright (period 2π·√(I/k) ≈ 1.4 s)
    np.testing.assert_allclose(theta, ref.y[0], atol=0.01)
