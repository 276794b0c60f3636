"""The corridor of Wang et al. 2016 (Dueling Network Architectures, section 4.1): a policy-evaluation testbed
whose true action values can be computed exactly, with any number of extra no-op actions.

Three connected corridors on a grid (``V = vertical``, ``H = horizontal``; defaults 10 and 50, the paper's):

- the left vertical corridor, cells ``(1, 0) .. (1, V - 1)``; the agent starts at its bottom, ``(1, 0)``;
- the horizontal corridor, cells ``(0, V) .. (H - 1, V)``, entered from the left corridor at ``(1, V)``;
- the right vertical corridor, cells ``(H - 1, V + 1) .. (H - 1, 2V)``, rising from the horizontal one's right end.

Two cells end the episode on arrival: the goal at the top right, ``(H - 1, 2V)``, with reward ``goal_reward``
(the largest), and the dead end one step left of the junction, ``(0, V)``, with the smaller ``side_reward``.
Every other step gives 0. Actions: 0 up, 1 down, 2 left, 3 right, 4 and every action above it a no-op
(``n_actions >= 5``). A move into a wall leaves the agent where it is.

The paper's text gives the section sizes, the start (bottom left), the goal with the largest reward (top
right), the five actions and the added no-ops; where exactly its other reward state lies and the reward values
are drawn in its Figure 3a only, so this layout and these values are rlzoo's reading of it (docs/claims.md).

Observations: ``"xy"`` (the paper's: the agent's x and y coordinates, scaled to [0, 1] by the grid's size, a
``Box(2)``) or ``"index"`` (the cell's number, a ``Discrete`` state that the Q-network's encoder one-hot codes).

``model()`` gives the whole MDP as arrays (``rlzoo.envs.corridor.TabularModel``) for dynamic programming.
"""

from __future__ import annotations

from dataclasses import dataclass

import gymnasium as gym
import numpy as np
from gymnasium import spaces

MOVES = ((0, 1), (0, -1), (-1, 0), (1, 0))  # up, down, left, right; actions >= 4 are no-ops
OBSERVATIONS = ("xy", "index")


@dataclass(frozen=True)
class TabularModel:
    """A deterministic finite MDP as arrays over ``S`` states and ``A`` actions.

    ``next_state[s, a]`` (int) follows action ``a`` in state ``s``, earning ``reward[s, a]``; ``terminal[s, a]``
    is True when that step ends the episode (no bootstrap). ``absorbing[s]`` marks the states where episodes
    end (their values are 0 and they are never acted in). ``observations[s]`` is what the agent sees in ``s``
    and ``state_of(obs)`` maps observations (any leading axes) back to state numbers.
    """

    next_state: np.ndarray  # [S, A] int64
    reward: np.ndarray  # [S, A] float64
    terminal: np.ndarray  # [S, A] bool
    absorbing: np.ndarray  # [S] bool
    observations: np.ndarray  # [S, *obs_shape]
    observation: str  # "xy" or "index"
    width: int
    height: int
    cells: tuple  # (x, y) of each state

    @property
    def num_states(self) -> int:
        return self.next_state.shape[0]

    @property
    def num_actions(self) -> int:
        return self.next_state.shape[1]

    def state_of(self, obs) -> np.ndarray:
        """State numbers ``[...]`` of observations ``[..., *obs_shape]``."""
        obs = np.asarray(obs)
        if self.observation == "index":
            return obs.astype(np.int64)
        x = np.rint(obs[..., 0] * (self.width - 1)).astype(np.int64)
        y = np.rint(obs[..., 1] * (self.height - 1)).astype(np.int64)
        return _grid(self.cells, self.width, self.height)[x, y]


def _grid(cells, width: int, height: int) -> np.ndarray:
    grid = np.full((width, height), -1, dtype=np.int64)
    for i, (x, y) in enumerate(cells):
        grid[x, y] = i
    return grid


def corridor_cells(vertical: int, horizontal: int) -> tuple[tuple, tuple, tuple, tuple]:
    """``(cells, start, goal, side)``: every cell ``(x, y)`` (left corridor bottom-up, then the horizontal one
    left to right, then the right corridor bottom-up) and the start, goal and side-reward cells."""
    left = [(1, y) for y in range(vertical)]
    middle = [(x, vertical) for x in range(horizontal)]
    right = [(horizontal - 1, vertical + 1 + k) for k in range(vertical)]
    cells = tuple(left + middle + right)
    return cells, (1, 0), (horizontal - 1, 2 * vertical), (0, vertical)


class Corridor(gym.Env):
    """The corridor MDP (see the module docstring). Deterministic; episodes start at the bottom left."""

    def __init__(self, n_actions: int = 5, vertical: int = 10, horizontal: int = 50, goal_reward: float = 1.0,
                 side_reward: float = 0.1, observation: str = "xy"):
        if int(n_actions) != n_actions or n_actions < 5:
            raise ValueError(f"env.kwargs.n_actions must be a whole number >= 5 (up, down, left, right and at "
                             f"least one no-op), got {n_actions}")
        if int(vertical) != vertical or vertical < 1:
            raise ValueError(f"env.kwargs.vertical must be a whole number >= 1, got {vertical}")
        if int(horizontal) != horizontal or horizontal < 3:
            raise ValueError(f"env.kwargs.horizontal must be a whole number >= 3, got {horizontal}")
        if observation not in OBSERVATIONS:
            raise ValueError(f"env.kwargs.observation must be one of {list(OBSERVATIONS)}, got {observation!r}")
        self.n_actions, self.vertical, self.horizontal = int(n_actions), int(vertical), int(horizontal)
        self.goal_reward, self.side_reward, self.observation = float(goal_reward), float(side_reward), observation
        cells, self._start, self._goal, self._side = corridor_cells(self.vertical, self.horizontal)
        self._cells = cells
        self.width, self.height = self.horizontal, 2 * self.vertical + 1
        self._grid = _grid(cells, self.width, self.height)  # cell number at [x, y], -1 off the corridors
        self.action_space = spaces.Discrete(self.n_actions)
        if observation == "xy":
            self.observation_space = spaces.Box(0.0, 1.0, shape=(2,), dtype=np.float32)
        else:
            self.observation_space = spaces.Discrete(len(cells))
        self.x, self.y = self._start

    def _obs(self, x: int, y: int):
        if self.observation == "index":
            return int(self._grid[x, y])
        return np.array([x / (self.width - 1), y / (self.height - 1)], dtype=np.float32)

    def _move(self, x: int, y: int, action: int) -> tuple[int, int]:
        if action >= len(MOVES):
            return x, y  # a no-op
        dx, dy = MOVES[action]
        nx, ny = x + dx, y + dy
        inside = 0 <= nx < self.width and 0 <= ny < self.height and self._grid[nx, ny] >= 0
        return (nx, ny) if inside else (x, y)

    def _reward(self, x: int, y: int) -> tuple[float, bool]:
        if (x, y) == self._goal:
            return self.goal_reward, True
        if (x, y) == self._side:
            return self.side_reward, True
        return 0.0, False

    def reset(self, *, seed: int | None = None, options=None):
        super().reset(seed=seed)
        self.x, self.y = self._start
        return self._obs(self.x, self.y), {}

    def step(self, action):
        if not 0 <= int(action) < self.n_actions:
            raise ValueError(f"action must be in [0, {self.n_actions}), got {action}")
        self.x, self.y = self._move(self.x, self.y, int(action))
        reward, done = self._reward(self.x, self.y)
        return self._obs(self.x, self.y), reward, done, False, {}

    def model(self) -> TabularModel:
        """The MDP as arrays (for dynamic programming and for measuring a Q-network's error)."""
        S, A = len(self._cells), self.n_actions
        next_state = np.zeros((S, A), dtype=np.int64)
        reward, terminal = np.zeros((S, A)), np.zeros((S, A), dtype=bool)
        for s, (x, y) in enumerate(self._cells):
            for a in range(A):
                nx, ny = self._move(x, y, a)
                next_state[s, a] = self._grid[nx, ny]
                reward[s, a], terminal[s, a] = self._reward(nx, ny)
        absorbing = np.array([c in (self._goal, self._side) for c in self._cells])
        observations = np.stack([np.asarray(self._obs(x, y)) for x, y in self._cells])
        return TabularModel(next_state, reward, terminal, absorbing, observations, self.observation, self.width,
                            self.height, self._cells)


gym.register("rlzoo/Corridor-v0", entry_point=Corridor, max_episode_steps=1000)
