"""CartPole-v1 for a whole population in one lean vector environment.

Same dynamics, constants, reward, termination and 500-step truncation as gymnasium's ``CartPole-v1``,
but without the per-environment wrapper stack and vector-env bookkeeping (about 6x less time per step
for one member, measured in benchmarks/throughput.py's setting), and each
member keeps its own generator (``reset(seed=[s0, s1, ...])`` seeds member ``i`` exactly like
``gym.make("CartPole-v1").reset(seed=s_i)``), so a member's episodes match a single gymnasium
environment with that seed. Finished members are reset in the same step (``AutoresetMode.SAME_STEP``);
their last observation is in ``info["final_obs"]``. ``state_dict()`` holds the whole state (positions,
step counts, generators), so a restored population continues bit for bit.
"""

from __future__ import annotations

import copy
import math

import numpy as np
from gymnasium import spaces
from gymnasium.utils import seeding
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from rlzoo.envs import spec_from_spaces

GRAVITY, MASSCART, MASSPOLE, LENGTH, FORCE_MAG, TAU = 9.8, 1.0, 0.1, 0.5, 10.0, 0.02
TOTAL_MASS = MASSPOLE + MASSCART
POLEMASS_LENGTH = MASSPOLE * LENGTH
THETA_THRESHOLD = 12 * 2 * math.pi / 360
X_THRESHOLD = 2.4


class CartPolePopulation(VectorEnv):
    metadata = {"autoreset_mode": AutoresetMode.SAME_STEP}
    exact_state = True  # state_dict() is the whole state

    def __init__(self, num_envs: int, max_episode_steps: int = 500):
        self.num_envs = int(num_envs)
        self.max_episode_steps = int(max_episode_steps)
        high = np.array([X_THRESHOLD * 2, np.inf, THETA_THRESHOLD * 2, np.inf], dtype=np.float32)
        self.single_observation_space = spaces.Box(-high, high, dtype=np.float32)
        self.single_action_space = spaces.Discrete(2)
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self.action_space = batch_space(self.single_action_space, self.num_envs)
        self._s = [[0.0] * 4 for _ in range(self.num_envs)]  # per member [x, x_dot, theta, theta_dot]
        self._elapsed = [0] * self.num_envs
        self.rngs = [seeding.np_random(None)[0] for _ in range(self.num_envs)]

    # The state lives in Python lists: the step is plain float arithmetic member by member, which for
    # populations of up to a few dozen members is faster than numpy on arrays this small, and is the
    # exact arithmetic of gymnasium's CartPole. These views are for state_dict() and tests.
    @property
    def state(self) -> np.ndarray:
        """``[P, 4]`` float64: x, x_dot, theta, theta_dot per member (a copy)."""
        return np.array(self._s, dtype=np.float64).reshape(self.num_envs, 4)

    @state.setter
    def state(self, value) -> None:
        self._s = np.asarray(value, dtype=np.float64).reshape(self.num_envs, 4).tolist()

    @property
    def elapsed(self) -> np.ndarray:
        """Steps into the running episode per member (a copy)."""
        return np.array(self._elapsed, dtype=np.int64)

    @elapsed.setter
    def elapsed(self, value) -> None:
        self._elapsed = [int(v) for v in np.asarray(value).reshape(self.num_envs)]

    def state_dict(self) -> dict:
        """``{"state": [P, 4] float64, "elapsed": [P] int64, "rngs": [P generators]}`` (copies)."""
        return {"state": self.state, "elapsed": self.elapsed, "rngs": copy.deepcopy(self.rngs)}

    def load_state_dict(self, state: dict) -> None:
        rngs = list(state["rngs"])
        if len(rngs) != self.num_envs:
            raise ValueError(f"the saved state has {len(rngs)} members, this environment {self.num_envs}")
        self.state = state["state"]
        self.elapsed = state["elapsed"]
        self.rngs = copy.deepcopy(rngs)  # not shared with the caller's dict

    def _reset_member(self, i: int) -> None:
        self._s[i] = self.rngs[i].uniform(low=-0.05, high=0.05, size=(4,)).tolist()
        self._elapsed[i] = 0

    def reset(self, *, seed=None, options=None):
        if seed is not None:
            seeds = [seed + i for i in range(self.num_envs)] if isinstance(seed, int) else list(seed)
            self.rngs = [seeding.np_random(s)[0] for s in seeds]
        for i in range(self.num_envs):
            self._reset_member(i)
        return np.array(self._s, dtype=np.float32), {}

    def step(self, actions):
        P = self.num_envs
        actions = actions.tolist() if isinstance(actions, np.ndarray) else list(actions)
        terminated, truncated = [False] * P, [False] * P
        final = None
        for i in range(P):
            x, x_dot, theta, theta_dot = self._s[i]
            force = FORCE_MAG if actions[i] == 1 else -FORCE_MAG
            costheta, sintheta = math.cos(theta), math.sin(theta)
            temp = (force + POLEMASS_LENGTH * (theta_dot * theta_dot) * sintheta) / TOTAL_MASS
            thetaacc = (GRAVITY * sintheta - costheta * temp) / (
                LENGTH * (4.0 / 3.0 - MASSPOLE * (costheta * costheta) / TOTAL_MASS))
            xacc = temp - POLEMASS_LENGTH * thetaacc * costheta / TOTAL_MASS
            new = [x + TAU * x_dot, x_dot + TAU * xacc, theta + TAU * theta_dot, theta_dot + TAU * thetaacc]
            self._elapsed[i] += 1
            if new[0] < -X_THRESHOLD or new[0] > X_THRESHOLD or new[2] < -THETA_THRESHOLD or new[2] > THETA_THRESHOLD:
                terminated[i] = True
            elif self._elapsed[i] >= self.max_episode_steps:
                truncated[i] = True
            else:
                self._s[i] = new
                continue
            if final is None:
                final = np.empty(P, dtype=object)
            final[i] = np.array(new, dtype=np.float32)
            self._reset_member(i)
        obs = np.array(self._s, dtype=np.float32)
        terminated, truncated = np.array(terminated), np.array(truncated)
        info = {} if final is None else {"final_obs": final, "_final_obs": terminated | truncated}
        return obs, np.ones(P), terminated, truncated, info

    def close_extras(self, **kwargs):
        pass


def make_cartpole(num_envs: int, max_episode_steps: int | None = None, obs_bounds: dict | None = None):
    """CartPole-v1 for the whole population in one ``CartPolePopulation``; its episodes equal gymnasium's
    ``CartPole-v1`` with the same seeds (``env=gym env.id=CartPole-v1`` runs the original)."""
    envs = CartPolePopulation(num_envs, max_episode_steps=max_episode_steps or 500)
    return envs, spec_from_spaces("CartPole-v1", envs.single_observation_space, envs.single_action_space, obs_bounds)
