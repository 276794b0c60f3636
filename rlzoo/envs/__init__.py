"""Environments as population vectors: ``P`` copies of one game, member ``i`` seeded with ``seed + i``.

Every factory returns ``(envs, spec)``: a gymnasium ``VectorEnv`` that resets finished members in
the same step (``AutoresetMode.SAME_STEP``; the true last observation is in ``info["final_obs"]``)
and an ``EnvSpec`` describing what the agent sees.

Every ``envs`` saves its own state: ``state_dict() -> dict`` and ``load_state_dict(state)``, with
``exact_state`` True when that state continues the episodes bit for bit, and False (``state_dict()`` is
``{}``, loading does nothing) where it cannot be saved as plain data (Atari emulators, MinAtar games).

Factories: ``make_gym_env`` (``rlzoo.envs.gym``), ``make_cartpole`` (``rlzoo.envs.cartpole``),
``make_atari_env`` (``rlzoo.envs.atari``), ``make_minatar_env`` (``rlzoo.envs.minatar``); toy MDPs
in ``rlzoo.envs.toy`` (chain, the maximisation-bias MDP, a noisy bandit). The Atari and MinAtar modules are
imported only when used.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import gymnasium
import numpy as np
from gymnasium import spaces

from rlzoo.errors import ConfigError

SAME_STEP = gymnasium.vector.AutoresetMode.SAME_STEP


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


def spec_from_spaces(name: str, obs_space: gymnasium.Space, action_space: gymnasium.Space,
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


def describe_observation(spec: EnvSpec) -> str:
    return f"{spec.name} observations of shape {spec.obs_shape} ({spec.obs_dtype})"


def num_states_for_table(spec: EnvSpec, bins) -> int:
    """How many table rows a Q-table needs for this environment (raises ConfigError if it cannot)."""
    if spec.num_states is not None:
        return spec.num_states
    if spec.pixels or len(spec.obs_shape) != 1:
        raise ConfigError(f"the Q-table agent cannot represent {describe_observation(spec)}: it needs discrete "
                          "or low-dimensional vector observations. Use agent=dqn (or a variant) instead")
    dims = spec.obs_shape[0]
    listed = isinstance(bins, (list, tuple))
    if listed and len(bins) != dims:
        raise ConfigError(f"agent.discretizer.bins has {len(bins)} entries but {spec.name}'s observations have "
                          f"{dims} dimensions: give one whole number for all, or {dims} of them")
    for b in (bins if listed else [bins]):
        if isinstance(b, bool) or not isinstance(b, (int, float)) or (isinstance(b, float) and not math.isfinite(b)) \
                or b < 1 or int(b) != b:
            raise ConfigError(f"agent.discretizer.bins must be whole numbers >= 1 (one, or one per dimension), "
                              f"got {bins}")
    n = math.prod(int(b) for b in (bins if listed else [bins] * dims))
    if n > 10_000_000:
        raise ConfigError(f"a Q-table over {describe_observation(spec)} with bins={bins} has {n:,} states; "
                          "lower agent.discretizer.bins or use agent=dqn")
    return n


# The factories live in their modules (which import the names above) and are re-exported here.
from rlzoo.envs.cartpole import CartPolePopulation, make_cartpole  # noqa: E402
from rlzoo.envs.gym import SyncPopulation, make_gym_env  # noqa: E402
from rlzoo.envs.toy import ChainMDP, MaxBiasMDP, NoisyBandit  # noqa: E402  (registers rlzoo/Chain-v0, ...)
from rlzoo.envs.corridor import Corridor  # noqa: E402  (registers rlzoo/Corridor-v0)

__all__ = ["SAME_STEP", "EnvSpec", "spec_from_spaces", "describe_observation", "num_states_for_table",
           "CartPolePopulation", "make_cartpole", "SyncPopulation", "make_gym_env", "ChainMDP", "Corridor"]
