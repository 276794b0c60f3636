"""MinAtar (Young and Tian 2019): five miniature Atari games on a 10x10 grid, small enough for CPU.

``minatar`` 1.0.15 registers gymnasium ids only when ``minatar.gym.register_envs()`` is called, and
its ``BaseEnv`` returns bool ``[10, 10, C]`` arrays. This module wraps ``minatar.Environment``
directly: channels first ``[C, 10, 10]`` as uint8 0/1 (a quarter of float32's replay memory), with
``EnvSpec.obs_scale = 1`` so the encoder does not divide them by 255. The games are Python objects
whose state cannot be saved as plain data: the population's ``exact_state`` is False (a resumed run
restarts the games).
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from rlzoo.envs import SAME_STEP, EnvSpec
from rlzoo.envs.gym import SyncPopulation
from rlzoo.errors import ConfigError

GAMES = ("asterix", "breakout", "freeway", "seaquest", "space_invaders")


class MinAtarEnv(gym.Env):
    """One MinAtar game as a gymnasium env with ``[C, 10, 10]`` uint8 observations.

    ``sticky_action_prob`` (0.1) and ``difficulty_ramping`` (on) are the paper's settings;
    ``minimal_action_set`` restricts the 6 actions to the game's useful ones (the paper used all 6).
    """

    metadata = {"render_modes": []}

    def __init__(self, game: str, sticky_action_prob: float = 0.1, difficulty_ramping: bool = True,
                 minimal_action_set: bool = False):
        from minatar import Environment
        self.game = Environment(env_name=game, sticky_action_prob=sticky_action_prob,
                                difficulty_ramping=difficulty_ramping)
        self.actions = self.game.minimal_action_set() if minimal_action_set else list(range(self.game.num_actions()))
        h, w, c = self.game.state_shape()
        self.observation_space = spaces.Box(0, 1, shape=(c, h, w), dtype=np.uint8)
        self.action_space = spaces.Discrete(len(self.actions))

    def _obs(self) -> np.ndarray:
        return np.ascontiguousarray(self.game.state().transpose(2, 0, 1), dtype=np.uint8)

    def reset(self, *, seed: int | None = None, options=None):
        super().reset(seed=seed)
        if seed is not None:
            self.game.seed(int(seed))
        self.game.reset()
        return self._obs(), {}

    def step(self, action):
        reward, done = self.game.act(self.actions[int(action)])
        return self._obs(), float(reward), bool(done), False, {}


def make_minatar_env(game: str, num_envs: int, sticky_action_prob: float = 0.1, difficulty_ramping: bool = True,
                     minimal_action_set: bool = False, max_episode_steps: int | None = None):
    """``num_envs`` copies of a MinAtar game (``breakout``, ``asterix``, ``freeway``, ``seaquest``,
    ``space_invaders``); ``max_episode_steps`` truncates episodes (``None``: no limit, as in the paper)."""
    if game not in GAMES:
        raise ConfigError(f"env.game={game!r} is not a MinAtar game; choose one of {', '.join(GAMES)}")

    def thunk():
        env = MinAtarEnv(game, sticky_action_prob, difficulty_ramping, minimal_action_set)
        return gym.wrappers.TimeLimit(env, max_episode_steps) if max_episode_steps else env

    envs = SyncPopulation(gym.vector.SyncVectorEnv([thunk for _ in range(num_envs)], autoreset_mode=SAME_STEP),
                          saveable=False)
    spec = EnvSpec(f"MinAtar/{game}", tuple(envs.single_observation_space.shape), np.dtype(np.uint8),
                   int(envs.single_action_space.n), pixels=True, obs_scale=1.0)
    return envs, spec
