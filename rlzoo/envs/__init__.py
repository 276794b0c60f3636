"""Environments as population vectors: ``P`` copies of one game, member ``i`` seeded with ``seed + i``.

Every factory returns ``(envs, spec)``: a gymnasium ``VectorEnv`` that resets finished members in
the same step (``AutoresetMode.SAME_STEP``; the true last observation is in ``info["final_obs"]``)
and an ``EnvSpec`` describing what the agent sees.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from rlzoo.errors import ConfigError

SAME_STEP = gym.vector.AutoresetMode.SAME_STEP


@dataclass(frozen=True)
class EnvSpec:
    """What an agent needs to know about an environment."""

    name: str
    obs_shape: tuple[int, ...]
    obs_dtype: np.dtype
    num_actions: int
    num_states: int | None = None  # set for Discrete observations
    obs_low: tuple[float, ...] | None = None  # bounds of flat Box observations (may be infinite)
    obs_high: tuple[float, ...] | None = None
    pixels: bool = False
    obs_scale: float | None = None  # the encoder divides observations by this; None: 255 for uint8, else 1


def spec_from_spaces(name: str, obs_space: gym.Space, action_space: gym.Space,
                     obs_bounds: dict | None = None) -> EnvSpec:
    """Check that the spaces are ones a value-based agent can use and describe them."""
    if not isinstance(action_space, spaces.Discrete):
        raise ConfigError(f"{name} has a {type(action_space).__name__} action space, but Q-learning agents "
                          "need discrete actions: pick an environment with Discrete actions")
    if isinstance(obs_space, spaces.Discrete):
        return EnvSpec(name, (), np.dtype(np.int64), int(action_space.n), num_states=int(obs_space.n))
    if not isinstance(obs_space, spaces.Box):
        raise ConfigError(f"{name} has a {type(obs_space).__name__} observation space; rlzoo supports "
                          "Box and Discrete observations")
    pixels = obs_space.dtype == np.uint8 and len(obs_space.shape) >= 2
    low = high = None
    if len(obs_space.shape) == 1:
        low, high = tuple(obs_space.low.astype(float)), tuple(obs_space.high.astype(float))
        if obs_bounds:
            low, high = tuple(map(float, obs_bounds["low"])), tuple(map(float, obs_bounds["high"]))
    return EnvSpec(name, tuple(obs_space.shape), np.dtype(obs_space.dtype), int(action_space.n),
                   obs_low=low, obs_high=high, pixels=pixels)


def _make_one(env_id: str, max_episode_steps: int | None, kwargs: dict[str, Any]):
    def thunk():
        return gym.make(env_id, max_episode_steps=max_episode_steps, disable_env_checker=True, **kwargs)
    return thunk


def make_gym_env(id: str, num_envs: int, max_episode_steps: int | None = None,
                 obs_bounds: dict | None = None, kwargs: dict[str, Any] | None = None):
    """Any registered gymnasium id with Discrete actions and Box or Discrete observations.

    ``obs_bounds`` ({low: [...], high: [...]}) gives finite ranges for flat observations whose space is
    unbounded (CartPole's velocities); only the Q-table's discretiser uses them.
    """
    kwargs = dict(kwargs or {})
    try:
        probe = gym.make(id, disable_env_checker=True, **kwargs)
    except gym.error.Error as e:  # unknown id, missing version, bad kwargs
        raise ConfigError(f"gymnasium cannot make {id!r}: {e}. Set env.id to a registered id "
                          "(e.g. CartPole-v1, Acrobot-v1, FrozenLake-v1)") from None
    except TypeError as e:
        raise ConfigError(f"gymnasium cannot make {id!r} with env.kwargs={kwargs}: {e}") from None
    spec = spec_from_spaces(id, probe.observation_space, probe.action_space, obs_bounds)
    probe.close()
    envs = gym.vector.SyncVectorEnv([_make_one(id, max_episode_steps, kwargs) for _ in range(num_envs)],
                                    autoreset_mode=SAME_STEP)
    return envs, spec


def make_cartpole(num_envs: int, max_episode_steps: int | None = None, obs_bounds: dict | None = None):
    """CartPole-v1 for the whole population in one lean vector env (``rlzoo.envs.cartpole``); its episodes equal
    gymnasium's ``CartPole-v1`` with the same seeds (``env=gym env.id=CartPole-v1`` runs the original)."""
    from rlzoo.envs.cartpole import CartPolePopulation

    envs = CartPolePopulation(num_envs, max_episode_steps=max_episode_steps or 500)
    return envs, spec_from_spaces("CartPole-v1", envs.single_observation_space, envs.single_action_space, obs_bounds)


class ChainMDP(gym.Env):
    """A deterministic chain ``0 - 1 - ... - (n-1)``: action 1 moves right, action 0 moves left
    (staying put at 0). Entering the last state gives reward 1 and ends the episode; every other
    step gives 0. Episodes start in state 0. Small enough that Q* is known in closed form:
    ``Q*(s, right) = gamma ** (n - 2 - s)``, ``Q*(s, left) = gamma * V*(max(s - 1, 0))``.
    """

    def __init__(self, n: int = 5):
        if n < 2:
            raise ValueError(f"ChainMDP needs n >= 2 states, got {n}")
        self.n = n
        self.observation_space = spaces.Discrete(n)
        self.action_space = spaces.Discrete(2)
        self.state = 0

    def reset(self, *, seed: int | None = None, options=None):
        super().reset(seed=seed)
        self.state = 0
        return self.state, {}

    def step(self, action):
        self.state = min(self.state + 1, self.n - 1) if action == 1 else max(self.state - 1, 0)
        done = self.state == self.n - 1
        return self.state, float(done), done, False, {}

    @staticmethod
    def optimal_q(n: int, gamma: float) -> np.ndarray:
        """Closed-form Q* (terminal state's row is zero)."""
        v = np.array([gamma ** (n - 2 - s) for s in range(n - 1)] + [0.0])
        q = np.zeros((n, 2))
        for s in range(n - 1):
            q[s, 1] = 1.0 if s + 1 == n - 1 else gamma * v[s + 1]
            q[s, 0] = gamma * v[max(s - 1, 0)]
        return q


gym.register("rlzoo/Chain-v0", entry_point=ChainMDP, max_episode_steps=100)


def describe_observation(spec: EnvSpec) -> str:
    return f"{spec.name} observations of shape {spec.obs_shape} ({spec.obs_dtype})"


def num_states_for_table(spec: EnvSpec, bins) -> int:
    """How many table rows a Q-table needs for this environment (raises ConfigError if it cannot)."""
    if spec.num_states is not None:
        return spec.num_states
    if spec.pixels or len(spec.obs_shape) != 1:
        raise ConfigError(f"the Q-table agent cannot represent {describe_observation(spec)}: it needs discrete "
                          "or low-dimensional vector observations. Use agent=dqn (or a variant) instead")
    n = int(math.prod(np.broadcast_to(np.asarray(bins), spec.obs_shape).tolist()))
    if n > 10_000_000:
        raise ConfigError(f"a Q-table over {describe_observation(spec)} with bins={bins} has {n:,} states; "
                          "lower agent.discretizer.bins or use agent=dqn")
    return n
