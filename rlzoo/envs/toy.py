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


class MaxBiasMDP(gym.Env):
    """The maximisation-bias MDP of Sutton and Barto (2018, Example 6.7, Figure 6.5).

    Episodes start in state A (observation 0), which has two actions: ``left`` (action 0) moves to B
    (observation 1) with reward 0; ``right`` (action 1) ends the episode with reward 0. Every one of B's
    ``actions_b`` actions ends the episode with a reward drawn from N(-0.1, 1) (``reward_mean``,
    ``reward_std``). The episode's last observation is the terminal state (observation 2).

    So left is worth -0.1 and right 0: under epsilon-greedy the best behaviour takes left from A only when it
    explores, with probability epsilon / 2 (5% at the book's epsilon = 0.1). The book says only that B has
    "many" actions; 10, the default, is the usual choice of reproductions of the figure.

    The action space is ``Discrete(actions_b)``: A uses only its first two actions, so every step reports the
    actions legal in the state it shows in ``info["action_mask"]`` (gymnasium's convention, int8), and the
    env config sets ``action_mask: true`` so that the training loop explores and maximises over those only.
    An episode's length tells which way it went from A: 1 (right) or 2 (left).
    """

    A, B, TERMINAL = 0, 1, 2
    LEFT, RIGHT = 0, 1

    def __init__(self, actions_b: int = 10, reward_mean: float = -0.1, reward_std: float = 1.0):
        if int(actions_b) != actions_b or actions_b < 2:
            raise ValueError(f"env.kwargs.actions_b must be a whole number >= 2 (A's left and right use two of "
                             f"the action indices), got {actions_b}")
        if not reward_std >= 0.0:
            raise ValueError(f"env.kwargs.reward_std must be >= 0, got {reward_std}")
        self.actions_b = int(actions_b)
        self.reward_mean, self.reward_std = float(reward_mean), float(reward_std)
        self.observation_space = spaces.Discrete(3)
        self.action_space = spaces.Discrete(self.actions_b)
        self.state = self.A

    def legal_actions(self, state: int) -> np.ndarray:
        """``[actions_b]`` int8: 1 for the actions legal in ``state`` (none in the terminal state)."""
        mask = np.zeros(self.actions_b, dtype=np.int8)
        if state == self.A:
            mask[:2] = 1
        elif state == self.B:
            mask[:] = 1
        return mask

    def reset(self, *, seed: int | None = None, options=None):
        super().reset(seed=seed)
        self.state = self.A
        return self.state, {"action_mask": self.legal_actions(self.A)}

    def step(self, action):
        action = int(action)
        if self.state == self.A:
            if action not in (self.LEFT, self.RIGHT):
                raise ValueError(f"state A has two actions (0: left, 1: right), got action {action}; set "
                                 "env.action_mask=true so that the loop keeps to info['action_mask']")
            self.state, reward = (self.B, 0.0) if action == self.LEFT else (self.TERMINAL, 0.0)
        elif self.state == self.B:
            if not 0 <= action < self.actions_b:
                raise ValueError(f"state B has {self.actions_b} actions, got action {action}")
            self.state, reward = self.TERMINAL, float(self.np_random.normal(self.reward_mean, self.reward_std))
        else:
            raise RuntimeError("step() called after the episode ended: call reset()")
        done = self.state == self.TERMINAL
        return self.state, reward, done, False, {"action_mask": self.legal_actions(self.state)}


class NoisyBandit(gym.Env):
    """One state, ``actions`` actions, every action ends the episode with a reward drawn from
    N(``reward_mean``, ``reward_std``): every action is worth ``reward_mean``, so any spread in the learned
    values is estimation noise and ``max_a Q(a) - reward_mean`` is pure maximisation bias (van Hasselt et al.
    2016, Theorem 1)."""

    def __init__(self, actions: int = 8, reward_mean: float = 0.0, reward_std: float = 1.0):
        if int(actions) != actions or actions < 1:
            raise ValueError(f"env.kwargs.actions must be a whole number >= 1, got {actions}")
        if not reward_std >= 0.0:
            raise ValueError(f"env.kwargs.reward_std must be >= 0, got {reward_std}")
        self.reward_mean, self.reward_std = float(reward_mean), float(reward_std)
        self.observation_space = spaces.Discrete(1)
        self.action_space = spaces.Discrete(int(actions))

    def reset(self, *, seed: int | None = None, options=None):
        super().reset(seed=seed)
        return 0, {}

    def step(self, action):
        return 0, float(self.np_random.normal(self.reward_mean, self.reward_std)), True, False, {}


gym.register("rlzoo/MaxBias-v0", entry_point=MaxBiasMDP)
gym.register("rlzoo/NoisyBandit-v0", entry_point=NoisyBandit)
