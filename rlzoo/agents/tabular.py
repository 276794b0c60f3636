"""Tabular Q-learning (Watkins 1989) with a population axis: ``Q[P, S, A]``.

Discrete observations index the table directly; continuous ones go through a ``Discretizer``
(a uniform grid over clipped ranges), so the table can be compared with DQN on the same environment.
The target uses the table itself (there is no target network).
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch

from rlzoo.replay import Batch


class Discretizer:
    """Uniform grid: each dimension ``d`` is clipped to ``[low[d], high[d]]`` and cut into ``bins[d]`` cells.

    Maps observations ``[..., D]`` to one integer state in ``[0, prod(bins))``.
    """

    def __init__(self, bins: Sequence[int] | int, low: Sequence[float], high: Sequence[float]):
        low, high = np.asarray(low, dtype=np.float64), np.asarray(high, dtype=np.float64)
        if low.shape != high.shape or low.ndim != 1:
            raise ValueError(f"discretizer low and high must be flat and of equal length, got {low.shape} and {high.shape}")
        if not np.all(np.isfinite(low) & np.isfinite(high)) or np.any(high <= low):
            raise ValueError("discretizer ranges must be finite with high > low in every dimension; "
                             f"got low={low.tolist()} high={high.tolist()} (set agent.low / agent.high)")
        bins_arr = np.broadcast_to(np.asarray(bins, dtype=np.int64), low.shape).copy()
        if np.any(bins_arr < 1):
            raise ValueError(f"discretizer bins must be >= 1, got {bins_arr.tolist()}")
        self.bins = torch.as_tensor(bins_arr)
        self.low = torch.as_tensor(low)
        self.high = torch.as_tensor(high)
        strides = np.cumprod([1, *bins_arr[::-1][:-1]])[::-1].copy()  # row-major multi-index
        self.strides = torch.as_tensor(strides)
        self.num_states = int(math.prod(bins_arr.tolist()))

    def __call__(self, obs: torch.Tensor) -> torch.Tensor:
        x = obs.to(torch.float64)
        frac = (x - self.low) / (self.high - self.low)
        cell = torch.floor(frac * self.bins).long().clamp(min=0).minimum(self.bins - 1)
        return (cell * self.strides).sum(dim=-1)


class TabularQAgent:
    """``Q[p, s, a] += lr * (r + gamma * (1 - terminated) * max_a' Q[p, s', a'] - Q[p, s, a])``.

    With a replay of capacity 1 and batch 1, updated every step, this is classic online Q-learning.
    Greedy ties (all zeros at the start) are broken at random by ``rlzoo.loop.epsilon_greedy``.
    """

    def __init__(self, num_states: int, num_actions: int, seeds: Sequence[int], lr: float = 0.1,
                 gamma: float = 0.99, discretizer: Discretizer | None = None, init_q: float = 0.0):
        if not 0.0 < lr <= 1.0:
            raise ValueError(f"the Q-table learning rate must be in (0, 1], got {lr}")
        if not 0.0 <= gamma <= 1.0:
            raise ValueError(f"gamma must be in [0, 1], got {gamma}")
        self.population = len(seeds)
        self.num_states, self.num_actions = int(num_states), int(num_actions)
        self.lr, self.gamma = float(lr), float(gamma)
        self.discretizer = discretizer
        self.q = torch.full((self.population, self.num_states, self.num_actions), float(init_q), dtype=torch.float64)
        self._rows = torch.arange(self.population).unsqueeze(1)
        self.updates = 0

    def state_index(self, obs: torch.Tensor) -> torch.Tensor:
        return self.discretizer(obs) if self.discretizer is not None else obs.long()

    def q_values(self, obs: np.ndarray) -> np.ndarray:
        """Table rows of one observation per member: ``[P, A]``."""
        s = self.state_index(torch.as_tensor(obs))
        return self.q[torch.arange(self.population), s].numpy()

    def learn(self, batch: Batch, step: int | None = None) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """One Q-learning step per sampled transition (the table itself gives the target: no target table)."""
        rows = self._rows
        s, s_next = self.state_index(batch.obs), self.state_index(batch.next_obs)
        q_sa = self.q[rows, s, batch.action]
        y = batch.reward.double() + self.gamma * (1.0 - batch.terminated.double()) * self.q[rows, s_next].max(dim=-1).values
        delta = y - q_sa
        rows_b = rows.expand_as(s)
        step = delta if batch.weights is None else delta * batch.weights.double()  # importance weights
        self.q.index_put_((rows_b, s, batch.action), self.lr * step / batch.action.shape[1], accumulate=True)
        self.updates += 1
        return {"loss": delta.pow(2).mean(dim=1).float(), "q_mean": q_sa.mean(dim=1).float()}, delta.float()

    def state_dict(self) -> dict:
        return {"q": self.q, "updates": self.updates}

    def load_state_dict(self, state: dict) -> None:
        self.q.copy_(state["q"])
        self.updates = int(state["updates"])
