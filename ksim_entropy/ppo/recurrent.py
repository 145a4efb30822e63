"""`RecurrentActorCriticMixin`: ksim's model hooks for a `ksim_entropy.policy.RecurrentActorCritic`.

ksim's `PPOTask` asks every task for its initial model carry, how to sample an action and how to recompute the log
probabilities, values and entropies of a trajectory. For the recurrent actor-critic those are the same for any robot;
a task says only what each network reads (`actor_observation`, `critic_observation`).

The carry is reset to its initial value after every transition that ended an episode, in the rollout (ksim does it)
and here when a trajectory is replayed for the PPO loss, so both see the same LSTM state. The entropy is the
diagonal Gaussian's in nats per action dimension (`ksim_entropy.ppo.temperature.gaussian_entropy`), what the
temperature compares with its target (xax's `Normal.entropy()` is 1.42 nats/dim too high).
"""

from abc import abstractmethod
from typing import Generic, TypedDict, TypeVar

import jax
import jax.numpy as jnp
import ksim
import xax
from jaxtyping import Array, PRNGKeyArray, PyTree

from ksim_entropy.policy import RecurrentActorCritic
from ksim_entropy.ppo.temperature import gaussian_entropy

__all__ = ["RecurrentActorCriticMixin", "RecurrentCarry"]

Config = TypeVar("Config", bound=ksim.PPOConfig)


class RecurrentCarry(TypedDict):
    """Per-environment recurrent state: LSTM (h, c) per layer for the actor and the critic."""

    actor: Array
    critic: Array


class RecurrentActorCriticMixin(ksim.PPOTask[Config], Generic[Config]):
    """The model hooks of a PPO task whose model is a `RecurrentActorCritic`."""

    @abstractmethod
    def actor_observation(self, model: RecurrentActorCritic, obs: xax.FrozenDict[str, PyTree], cmd: PyTree) -> Array:
        """The actor's input vector from one step's observations and commands."""

    @abstractmethod
    def critic_observation(self, model: RecurrentActorCritic, obs: xax.FrozenDict[str, PyTree], cmd: PyTree) -> Array:
        """The critic's input vector (typically the actor's plus privileged state)."""

    def get_initial_model_carry(self, model: RecurrentActorCritic, rng: PRNGKeyArray) -> RecurrentCarry:
        return {
            "actor": jnp.zeros(model.actor.body.carry_shape, dtype=jnp.float32),
            "critic": jnp.zeros(model.critic.body.carry_shape, dtype=jnp.float32),
        }

    def sample_action(
        self,
        model: RecurrentActorCritic,
        model_carry: RecurrentCarry,
        physics_model: ksim.PhysicsModel,
        physics_state: ksim.PhysicsState,
        observations: xax.FrozenDict[str, PyTree],
        commands: xax.FrozenDict[str, PyTree],
        rng: PRNGKeyArray,
        argmax: bool,
    ) -> ksim.Action:
        dist, actor_carry = model.actor(self.actor_observation(model, observations, commands), model_carry["actor"])
        action = dist.mode() if argmax else dist.sample(rng)
        return ksim.Action(action=action, carry={"actor": actor_carry, "critic": model_carry["critic"]})

    def get_ppo_variables(
        self,
        model: RecurrentActorCritic,
        trajectory: ksim.Trajectory,
        model_carry: RecurrentCarry,
        rng: PRNGKeyArray,
    ) -> tuple[ksim.PPOVariables, RecurrentCarry]:
        initial = self.get_initial_model_carry(model, rng)

        def step(carry: RecurrentCarry, transition: ksim.Trajectory) -> tuple[RecurrentCarry, ksim.PPOVariables]:
            actor_in = self.actor_observation(model, transition.obs, transition.command)
            dist, actor_carry = model.actor(actor_in, carry["actor"])
            critic_in = self.critic_observation(model, transition.obs, transition.command)
            value, critic_carry = model.critic(critic_in, carry["critic"])
            variables = ksim.PPOVariables(
                log_probs=dist.log_prob(transition.action),
                values=value,
                entropy=gaussian_entropy(dist.scale_n),
            )
            next_carry = jax.tree.map(
                lambda reset, keep: jnp.where(transition.done, reset, keep),
                initial,
                {"actor": actor_carry, "critic": critic_carry},
            )
            return next_carry, variables

        next_carry, variables = xax.scan(step, model_carry, trajectory, jit_level=ksim.JitLevel.RL_CORE)
        return variables, next_carry

    @staticmethod
    def actor_over_windows(model: RecurrentActorCritic, windows: Array) -> tuple[Array, Array, Array]:
        """The actor over windows (N, W, D) of its inputs, each from a zero state, at each window's last step.

        Returns its body's output (N, H), the action mean (N, A, rad) and std (N, A, rad).
        """
        actor = model.actor

        def one(window: Array) -> tuple[Array, Array, Array]:
            def step(carry: Array, x: Array) -> tuple[Array, None]:
                _, next_carry = actor.body(x, carry)
                return next_carry, None

            carry = jnp.zeros(actor.body.carry_shape, dtype=window.dtype)
            carry, _ = jax.lax.scan(step, carry, window[:-1])
            features, _ = actor.body(window[-1], carry)
            mean, std, _ = actor.mean_and_std(window[-1], carry)
            return features, mean, std

        return jax.vmap(one)(windows)
