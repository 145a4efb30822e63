"""The mixin inside ksim's real rollout (K-Bot walking task, MJX on CPU): physics is redrawn at every episode reset
from the widths in the curriculum state, and changing those widths does not recompile the jitted unroll."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ksim_entropy.curriculum import RandomizationCurriculum
from ksim_entropy.ppo.mixins import DrawLayout, randomization_metrics
from tests.walk_parts import build_walk_parts

pytestmark = pytest.mark.slow

STEPS = 3  # control steps per unroll call; episodes last 5 (0.1 s at 50 Hz)


@pytest.fixture(scope="module")
def rollout_parts(tmp_path_factory):
    p = build_walk_parts(str(tmp_path_factory.mktemp("mixin")), argmax_action=True)
    unroll = jax.jit(lambda env, sh: p.task._single_unroll(p.constants, env, sh, STEPS))
    return p.task, p.constants, p.env_state, p.shared, unroll


def test_physics_is_redrawn_at_each_reset_at_the_current_widths(rollout_parts):
    task, constants, env_state, shared, unroll = rollout_parts
    curriculum = constants.curriculum
    assert isinstance(curriculum, RandomizationCurriculum)
    nominal = np.asarray(shared.physics_model.body_mass)
    first_draw = np.asarray(env_state.randomization_dict["body_mass"])
    assert not np.allclose(first_draw, nominal)  # ksim's initial per-env draw at the starting widths

    # Narrow every range to nothing: takes effect at the next reset only.
    narrow = task.with_widths(env_state, curriculum, np.zeros(len(curriculum.randomization.names)))
    traj, _, after = unroll(narrow, shared)
    assert not np.asarray(traj.done).any()
    np.testing.assert_array_equal(after.randomization_dict["body_mass"], first_draw)

    traj, _, after = unroll(after, shared)  # crosses the 0.1 s episode end
    assert np.asarray(traj.done).any(axis=1).all()
    np.testing.assert_allclose(after.randomization_dict["body_mass"], np.broadcast_to(nominal, first_draw.shape))
    np.testing.assert_allclose(
        after.randomization_dict["actuator_gainprm"],
        np.broadcast_to(
            np.asarray(shared.physics_model.actuator_gainprm), after.randomization_dict["actuator_gainprm"].shape
        ),
        rtol=1e-6,
    )

    # Widen again: a width change is a new array value, not a new program. (The second call may add one cache
    # entry: its inputs are the first call's committed outputs; ksim's training loop sees the same once.)
    compiled = unroll._cache_size()
    wide = jax.device_put(task.with_widths(after, curriculum, curriculum.randomization.max_widths), jax.devices()[0])
    _, _, after_wide = unroll(wide, shared)
    assert unroll._cache_size() == compiled
    np.testing.assert_array_equal(after_wide.curriculum_state.state.widths[0], curriculum.randomization.max_widths)


def test_width_changes_are_validated(rollout_parts):
    task, constants, env_state, _, _ = rollout_parts
    curriculum = constants.curriculum
    widths = np.array(curriculum.randomization.max_widths)
    widths[0] += 1.0
    with pytest.raises(ValueError, match="impossible randomization width"):
        task.with_widths(env_state, curriculum, widths)


def test_logged_metrics_are_the_closed_forms(rollout_parts):
    _, constants, _, _, _ = rollout_parts
    dr = constants.curriculum.randomization
    widths = jnp.asarray(dr.initial_widths) * 0.7
    metrics = randomization_metrics(dr, widths)
    assert float(metrics["dr_entropy_nats"]) == pytest.approx(float(jnp.sum(dr.entropies(widths))), rel=1e-6)
    assert float(metrics["dr_npd"]) == pytest.approx(float(dr.npd(widths)), rel=1e-6)
    for i, name in enumerate(dr.names):
        assert float(metrics[f"dr_width_{name}"]) == pytest.approx(float(widths[i]))
    # npd by hand: Σ_i dims_i · mean log(range) / Σ dims
    ranges = [
        np.log(np.subtract(*reversed([np.asarray(b) for b in p.dist.bounds(widths[i])])))
        for i, p in enumerate(dr.parameters)
    ]
    by_hand = (
        sum(np.broadcast_to(r, (p.dims,)).sum() for r, p in zip(ranges, dr.parameters, strict=True)) / dr.dims.sum()
    )
    assert float(metrics["dr_npd"]) == pytest.approx(by_hand, rel=1e-5)


def test_every_reset_env_gets_its_own_draw_and_the_staged_draws_do_not_leak(rollout_parts):
    _, _, env_state, shared, unroll = rollout_parts
    _, _, mid = unroll(env_state, shared)
    traj, _, after = unroll(mid, shared)  # steps 4-6 cross the 5-step episode end
    assert np.asarray(traj.done).any(axis=1).all()
    # The next-episode draws staged for the scan are gone again: the carry keeps ksim's structure.
    assert set(after.randomization_dict) == set(env_state.randomization_dict)
    masses = np.asarray(after.randomization_dict["body_mass"])
    before = np.asarray(mid.randomization_dict["body_mass"])
    assert not np.allclose(masses[0], before[0]) and not np.allclose(masses[1], before[1])
    assert not np.allclose(masses[0], masses[1])  # independent draws per environment


def test_step_engine_alone_redraws_at_reset(rollout_parts):
    # ksim's viewer calls step_engine outside the unroll, where no draw is staged: it samples at the reset itself.
    task, constants, env_state, shared, unroll = rollout_parts
    _, _, state = unroll(env_state, shared)  # 3 of the 5 steps
    step = jax.jit(jax.vmap(lambda e: task.step_engine(constants, e, shared)))
    before = np.asarray(state.randomization_dict["body_mass"])
    traj, state = step(state)
    assert not np.asarray(traj.done).any()
    np.testing.assert_array_equal(state.randomization_dict["body_mass"], before)
    traj, state = step(state)
    assert np.asarray(traj.done).all()
    after = np.asarray(state.randomization_dict["body_mass"])
    assert not np.allclose(after[0], before[0]) and not np.allclose(after[1], before[1])


def test_draw_layout_packs_every_randomized_field_and_unpacks_it_exactly(rollout_parts):
    """Inside an unroll the draws travel as one flat vector per environment: `unpack(pack(x))` is `x` bit for bit,
    and the layout covers exactly the fields the walk's randomization writes, at the model's own shapes."""
    _, constants, env_state, shared, _ = rollout_parts
    layout = DrawLayout.of(constants.curriculum.randomization, shared.physics_model)
    assert set(layout.names) == set(env_state.randomization_dict)  # the walk's only randomizer
    for name, shape in zip(layout.names, layout.shapes, strict=True):
        assert shape == functools.reduce(getattr, name.split("."), shared.physics_model).shape
    for env in range(2):
        fields = {k: env_state.randomization_dict[k][env] for k in layout.names}
        flat = layout.pack(fields)
        assert flat.shape == (sum(int(np.prod(s)) for s in layout.shapes),)
        unpacked = layout.unpack(flat)
        assert set(unpacked) == set(fields)
        for k, v in unpacked.items():
            np.testing.assert_array_equal(v, fields[k])


def test_draw_layout_refuses_fields_it_cannot_pack_as_float32():
    class IntFieldDraw:  # a randomization whose draw writes an integer model field
        num_draws = 2
        initial_widths = np.ones(1, dtype=np.float32)

        def sample_from_unit(self, model, u, widths):
            return {"body_mass": jnp.zeros(3), "geom_contype": jnp.zeros(3, dtype=jnp.int32)}

    with pytest.raises(TypeError, match=r"\['geom_contype'\] are not float32"):
        DrawLayout.of(IntFieldDraw(), None)
