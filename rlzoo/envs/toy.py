"""Toy MDPs small enough that their optimal values are known in closed form (registered with gymnasium, so
``make_gym_env`` runs them like any other id)."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
from gymnasium import spaces


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
