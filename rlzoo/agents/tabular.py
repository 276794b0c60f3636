"""Tabular Q-learning (Watkins 1989) and Double Q-learning (van Hasselt 2010) with a population axis:
``Q[P, S, A]``.

Discrete observations index the table directly; continuous ones go through a ``Discretizer``
(a uniform grid over clipped ranges), so the table can be compared with DQN on the same environment.
Q-learning's target uses the table itself (there is no target network); Double Q-learning's uses its other table.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch

from rlzoo.replay import Batch
from rlzoo.seeding import member_rngs
from rlzoo.targets import double_dqn_target

# Double Q-learning's coin: a random stream of its own (rlzoo.seeding numbers the loop's and the replay's streams
# 1, 2, 4 and 5), so that it shifts no other draw.
TABLE_CHOICE = 6


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
        gamma = self.gamma if batch.discount is None else batch.discount.double()  # n-step: gamma**k per sample
        y = batch.reward.double() + gamma * (1.0 - batch.terminated.double()) * self.q[rows, s_next].max(dim=-1).values
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


class DoubleTabularQAgent(TabularQAgent):
    """Double Q-learning (van Hasselt 2010; Sutton and Barto 2018, section 6.7): two tables, ``q`` and ``q2``.

    For every sampled transition a fair coin, from the member's own random stream, picks the table ``U`` to
    update; the other table ``O`` evaluates ``U``'s greedy action in the next state::

        U[p, s, a] += lr * (r + gamma * (1 - terminated) * O[p, s', argmax_a' U[p, s', a']] - U[p, s, a])

    which is ``rlzoo.targets.double_dqn_target`` with ``U`` selecting and ``O`` evaluating (argmax ties go to the
    first action, as ``torch.argmax`` breaks them). The agent acts on the mean ``(q + q2) / 2``: the book's
    epsilon-greedy in ``Q1 + Q2`` picks the same actions, ties included, and the mean keeps the logged
    ``max_a Q(s, a)`` in the units of a return.
    """

    def __init__(self, num_states: int, num_actions: int, seeds: Sequence[int], lr: float = 0.1,
                 gamma: float = 0.99, discretizer: Discretizer | None = None, init_q: float = 0.0):
        super().__init__(num_states, num_actions, seeds, lr=lr, gamma=gamma, discretizer=discretizer, init_q=init_q)
        self.q2 = self.q.clone()
        self.rngs = member_rngs(seeds, TABLE_CHOICE)

    def q_values(self, obs: np.ndarray) -> np.ndarray:
        """The mean of the two tables' rows, one observation per member: ``[P, A]``."""
        s = self.state_index(torch.as_tensor(obs))
        members = torch.arange(self.population)
        return ((self.q[members, s] + self.q2[members, s]) / 2).numpy()

    def learn(self, batch: Batch, step: int | None = None) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """One Double Q-learning step per sampled transition, each updating one table chosen by a coin."""
        rows = self._rows
        s, s_next, a = self.state_index(batch.obs), self.state_index(batch.next_obs), batch.action
        first = torch.as_tensor(np.stack([rng.random(a.shape[1]) < 0.5 for rng in self.rngs]))  # [P, B]: update q
        q_next, q2_next = self.q[rows, s_next], self.q2[rows, s_next]
        pick = first.unsqueeze(-1)
        gamma = self.gamma if batch.discount is None else batch.discount.double()  # n-step: gamma**k per sample
        y = double_dqn_target(batch.reward.double(), batch.terminated, gamma,
                              q_next_target=torch.where(pick, q2_next, q_next),
                              q_next_online=torch.where(pick, q_next, q2_next))
        q_sa = torch.where(first, self.q[rows, s, a], self.q2[rows, s, a])
        delta = y - q_sa
        rows_b = rows.expand_as(s)
        change = delta if batch.weights is None else delta * batch.weights.double()  # importance weights
        change = self.lr * change / a.shape[1]
        zero = torch.zeros_like(change)
        self.q.index_put_((rows_b, s, a), torch.where(first, change, zero), accumulate=True)
        self.q2.index_put_((rows_b, s, a), torch.where(first, zero, change), accumulate=True)
        self.updates += 1
        return {"loss": delta.pow(2).mean(dim=1).float(), "q_mean": q_sa.mean(dim=1).float()}, delta.float()

    def state_dict(self) -> dict:
        return {"q": self.q, "q2": self.q2, "updates": self.updates,
                "rngs": [rng.bit_generator.state for rng in self.rngs]}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.q2.copy_(state["q2"])
        for rng, saved in zip(self.rngs, state["rngs"]):
            rng.bit_generator.state = saved
