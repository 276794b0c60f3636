"""CartPole-v1 for a whole population in one lean vector environment.

Same dynamics, constants, reward, termination and 500-step truncation as gymnasium's ``CartPole-v1``,
but without the per-environment wrapper stack and vector-env bookkeeping (about 6x less time per step
for one member, measured in benchmarks/throughput.py's setting), and each
member keeps its own generator (``reset(seed=[s0, s1, ...])`` seeds member ``i`` exactly like
``gym.make("CartPole-v1").reset(seed=s_i)``), so a member's episodes match a single gymnasium
environment with that seed. Finished members are reset in the same step (``AutoresetMode.SAME_STEP``);
their last observation is in ``info["final_obs"]``.
"""

from __future__ import annotations

import math

import numpy as np
from gymnasium import spaces
from gymnasium.utils import seeding
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

GRAVITY, MASSCART, MASSPOLE, LENGTH, FORCE_MAG, TAU = 9.8, 1.0, 0.1, 0.5, 10.0, 0.02
TOTAL_MASS = MASSPOLE + MASSCART
POLEMASS_LENGTH = MASSPOLE * LENGTH
THETA_THRESHOLD = 12 * 2 * math.pi / 360
X_THRESHOLD = 2.4


class CartPolePopulation(VectorEnv):
    metadata = {"autoreset_mode": AutoresetMode.SAME_STEP}

    def __init__(self, num_envs: int, max_episode_steps: int = 500):
        self.num_envs = int(num_envs)
        self.max_episode_steps = int(max_episode_steps)
        high = np.array([X_THRESHOLD * 2, np.inf, THETA_THRESHOLD * 2, np.inf], dtype=np.float32)
        self.single_observation_space = spaces.Box(-high, high, dtype=np.float32)
        self.single_action_space = spaces.Discrete(2)
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self.action_space = batch_space(self.single_action_space, self.num_envs)
        self.state = np.zeros((self.num_envs, 4))
        self.elapsed = np.zeros(self.num_envs, dtype=np.int64)
        self.rngs = [seeding.np_random(None)[0] for _ in range(self.num_envs)]

    def _reset_member(self, i: int) -> None:
        self.state[i] = self.rngs[i].uniform(low=-0.05, high=0.05, size=(4,))
        self.elapsed[i] = 0

    def reset(self, *, seed=None, options=None):
        if seed is not None:
            seeds = [seed + i for i in range(self.num_envs)] if isinstance(seed, int) else list(seed)
            self.rngs = [seeding.np_random(s)[0] for s in seeds]
        for i in range(self.num_envs):
            self._reset_member(i)
        return self.state.astype(np.float32), {}

    def step(self, actions):
        # Plain Python floats, member by member: for populations of up to a few dozen members this is
        # faster than numpy on arrays this small, and it is the exact arithmetic of gymnasium's CartPole.
        obs = np.empty((self.num_envs, 4), dtype=np.float32)
        terminated = np.zeros(self.num_envs, dtype=bool)
        truncated = np.zeros(self.num_envs, dtype=bool)
        final = None
        state = self.state
        for i in range(self.num_envs):
            x, x_dot, theta, theta_dot = state[i].tolist()
            force = FORCE_MAG if actions[i] == 1 else -FORCE_MAG
            costheta, sintheta = math.cos(theta), math.sin(theta)
            temp = (force + POLEMASS_LENGTH * (theta_dot * theta_dot) * sintheta) / TOTAL_MASS
            thetaacc = (GRAVITY * sintheta - costheta * temp) / (
                LENGTH * (4.0 / 3.0 - MASSPOLE * (costheta * costheta) / TOTAL_MASS))
            xacc = temp - POLEMASS_LENGTH * thetaacc * costheta / TOTAL_MASS
            new = (x + TAU * x_dot, x_dot + TAU * xacc, theta + TAU * theta_dot, theta_dot + TAU * thetaacc)
            state[i] = new
            obs[i] = new
            self.elapsed[i] += 1
            if new[0] < -X_THRESHOLD or new[0] > X_THRESHOLD or new[2] < -THETA_THRESHOLD or new[2] > THETA_THRESHOLD:
                terminated[i] = True
            elif self.elapsed[i] >= self.max_episode_steps:
                truncated[i] = True
            else:
                continue
            if final is None:
                final = np.empty(self.num_envs, dtype=object)
            final[i] = obs[i].copy()
            self._reset_member(i)
            obs[i] = state[i]
        info = {} if final is None else {"final_obs": final, "_final_obs": terminated | truncated}
        return obs, np.ones(self.num_envs), terminated, truncated, info

    def close_extras(self, **kwargs):
        pass
