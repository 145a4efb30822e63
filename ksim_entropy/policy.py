"""A recurrent (LSTM) actor-critic for position-controlled robots, plus the carry it threads through time.

The actor maps one observation vector to a diagonal Gaussian over absolute joint position targets (rad):
mean = nominal pose + network output, std = clip((softplus(raw) + min_std) · var_scale, max=max_std).
At initialisation the output layer's weights can be scaled down (`head_init_scale`, e.g. 0.01: the first policy
holds the nominal pose, the "last policy layer ×0.01" of Andrychowicz et al., arXiv 2006.05990) and its std bias
set so every joint starts at `init_std` rad.
Its carry is a plain array of shape (depth, 2, hidden) (LSTM hidden and cell states), so it flattens into the
kinfer carry unchanged.
"""

import math
from collections.abc import Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import xax
from jaxtyping import Array, PRNGKeyArray

__all__ = ["BODIES", "LSTMStack", "MLPStack", "RecurrentActor", "RecurrentActorCritic", "RecurrentCritic", "make_body"]


class LSTMStack(eqx.Module):
    """Linear input projection followed by `depth` stacked LSTM cells."""

    input_proj: eqx.nn.Linear
    cells: tuple[eqx.nn.LSTMCell, ...]

    def __init__(self, key: PRNGKeyArray, *, num_inputs: int, hidden_size: int, depth: int) -> None:
        if depth < 1 or hidden_size < 1 or num_inputs < 1:
            raise ValueError(f"LSTMStack needs positive sizes, got {num_inputs=}, {hidden_size=}, {depth=}")
        proj_key, *cell_keys = jax.random.split(key, depth + 1)
        self.input_proj = eqx.nn.Linear(num_inputs, hidden_size, key=proj_key)
        self.cells = tuple(eqx.nn.LSTMCell(hidden_size, hidden_size, key=k) for k in cell_keys)

    @property
    def carry_shape(self) -> tuple[int, int, int]:
        """(depth, 2, hidden): per layer, the LSTM hidden state and cell state."""
        return (len(self.cells), 2, self.cells[0].hidden_size)

    def __call__(self, x_n: Array, carry: Array) -> tuple[Array, Array]:
        x_n = self.input_proj(x_n)
        next_carry = []
        for layer, cell in enumerate(self.cells):  # indexed, not iterated: jax 0.11 iterates an array by `unstack`
            h, c = cell(x_n, (carry[layer, 0], carry[layer, 1]))
            next_carry.append(_stack([h, c]))
            x_n = h
        return x_n, _stack(next_carry)


def _stack(arrays: Sequence[Array]) -> Array:
    """`jnp.stack` along a new first axis, written as a concatenation that exports to ONNX on every jax.

    jax 0.10 lowers `jnp.stack` to a `stack` primitive the locked jax2onnx (0.10.4) has no converter for (nor for
    jax 0.11's `unstack`, which iterating over an array produces).
    """
    return jnp.concatenate([a[None] for a in arrays], axis=0)


class MLPStack(eqx.Module):
    """`depth` ELU layers of width `hidden_size`: a feedforward body with `LSTMStack`'s interface.

    Its carry is one placeholder float passed through unchanged, so a policy with this body exports, checkpoints and
    runs in kinfer like a recurrent one.
    """

    layers: tuple[eqx.nn.Linear, ...]

    def __init__(self, key: PRNGKeyArray, *, num_inputs: int, hidden_size: int, depth: int) -> None:
        if depth < 1 or hidden_size < 1 or num_inputs < 1:
            raise ValueError(f"MLPStack needs positive sizes, got {num_inputs=}, {hidden_size=}, {depth=}")
        keys = jax.random.split(key, depth)
        sizes = [num_inputs] + [hidden_size] * depth
        self.layers = tuple(eqx.nn.Linear(a, b, key=k) for a, b, k in zip(sizes[:-1], sizes[1:], keys, strict=True))

    @property
    def carry_shape(self) -> tuple[int, int, int]:
        return (1, 1, 1)

    def __call__(self, x_n: Array, carry: Array) -> tuple[Array, Array]:
        for layer in self.layers:
            x_n = jax.nn.elu(layer(x_n))
        return x_n, carry


BODIES = {"lstm": LSTMStack, "mlp": MLPStack}


def make_body(kind: str, key: PRNGKeyArray, *, num_inputs: int, hidden_size: int, depth: int) -> LSTMStack | MLPStack:
    """The network body by name: "lstm" (recurrent) or "mlp" (feedforward)."""
    if kind not in BODIES:
        raise ValueError(f"policy body must be one of {sorted(BODIES)}, got {kind!r}")
    return BODIES[kind](key, num_inputs=num_inputs, hidden_size=hidden_size, depth=depth)


class RecurrentActor(eqx.Module):
    """Gaussian policy over absolute joint targets (rad) around a fixed nominal pose."""

    body: LSTMStack | MLPStack
    head: eqx.nn.Linear
    nominal_pose: tuple[float, ...] = eqx.field(static=True)
    min_std: float = eqx.field(static=True)
    max_std: float = eqx.field(static=True)
    var_scale: float = eqx.field(static=True)

    def __init__(
        self,
        key: PRNGKeyArray,
        *,
        num_inputs: int,
        nominal_pose: Sequence[float],
        hidden_size: int,
        depth: int,
        min_std: float,
        max_std: float,
        var_scale: float,
        init_std: float | None = None,
        head_init_scale: float = 1.0,
        body: str = "lstm",
    ) -> None:
        if not 0.0 < min_std <= max_std:
            raise ValueError(f"Need 0 < min_std <= max_std, got min_std={min_std}, max_std={max_std}")
        if not 0.0 < head_init_scale <= 1.0:
            raise ValueError(f"head_init_scale must be in (0, 1], got {head_init_scale}")
        if init_std is not None and not min_std * var_scale < init_std < max_std:
            raise ValueError(
                f"init_std={init_std} rad is out of the std's reach ({min_std * var_scale:g}, {max_std:g}) rad "
                "(min_std·var_scale, max_std)"
            )
        body_key, head_key = jax.random.split(key)
        num_joints = len(nominal_pose)
        self.body = make_body(body, body_key, num_inputs=num_inputs, hidden_size=hidden_size, depth=depth)
        head = eqx.nn.Linear(hidden_size, 2 * num_joints, key=head_key)
        weight, bias = head.weight * head_init_scale, head.bias * head_init_scale
        if init_std is not None:  # softplus(raw) = init_std / var_scale − min_std at raw = bias
            bias = bias.at[num_joints:].set(_softplus_inverse(init_std / var_scale - min_std))
        self.head = eqx.tree_at(lambda lin: (lin.weight, lin.bias), head, (weight, bias))
        self.nominal_pose = tuple(float(q) for q in nominal_pose)
        self.min_std = min_std
        self.max_std = max_std
        self.var_scale = var_scale

    def mean_and_std(self, obs_n: Array, carry: Array) -> tuple[Array, Array, Array]:
        """Action mean (rad), action std (rad) and the next carry; plain array ops, so it exports to ONNX."""
        x_n, next_carry = self.body(obs_n, carry)
        out = self.head(x_n)
        num_joints = len(self.nominal_pose)
        mean_j = out[:num_joints] + jnp.asarray(self.nominal_pose, dtype=out.dtype)
        std_j = jnp.minimum((jax.nn.softplus(out[num_joints:]) + self.min_std) * self.var_scale, self.max_std)
        return mean_j, std_j, next_carry

    def __call__(self, obs_n: Array, carry: Array) -> tuple[xax.Normal, Array]:
        mean_j, std_j, next_carry = self.mean_and_std(obs_n, carry)
        return xax.Normal(mean_j, std_j), next_carry


def _softplus_inverse(y: float) -> float:
    return float(y + math.log(-math.expm1(-y)))


class RecurrentCritic(eqx.Module):
    """Scalar state-value estimate from (privileged) observations."""

    body: LSTMStack | MLPStack
    head: eqx.nn.Linear

    def __init__(self, key: PRNGKeyArray, *, num_inputs: int, hidden_size: int, depth: int, body: str = "lstm") -> None:
        body_key, head_key = jax.random.split(key)
        self.body = make_body(body, body_key, num_inputs=num_inputs, hidden_size=hidden_size, depth=depth)
        self.head = eqx.nn.Linear(hidden_size, 1, key=head_key)

    def __call__(self, obs_n: Array, carry: Array) -> tuple[Array, Array]:
        x_n, next_carry = self.body(obs_n, carry)
        return self.head(x_n)[0], next_carry


class RecurrentActorCritic(eqx.Module):
    """Actor and critic with separate recurrent bodies (the critic may see privileged inputs)."""

    actor: RecurrentActor
    critic: RecurrentCritic

    def __init__(
        self,
        key: PRNGKeyArray,
        *,
        num_actor_inputs: int,
        num_critic_inputs: int,
        nominal_pose: Sequence[float],
        hidden_size: int,
        depth: int,
        min_std: float = 0.01,
        max_std: float = 1.0,
        var_scale: float = 0.5,
        init_std: float | None = None,
        head_init_scale: float = 1.0,
        body: str = "lstm",
    ) -> None:
        actor_key, critic_key = jax.random.split(key)
        self.actor = RecurrentActor(
            actor_key,
            num_inputs=num_actor_inputs,
            nominal_pose=nominal_pose,
            hidden_size=hidden_size,
            depth=depth,
            min_std=min_std,
            max_std=max_std,
            var_scale=var_scale,
            init_std=init_std,
            head_init_scale=head_init_scale,
            body=body,
        )
        self.critic = RecurrentCritic(
            critic_key, num_inputs=num_critic_inputs, hidden_size=hidden_size, depth=depth, body=body
        )
