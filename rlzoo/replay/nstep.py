"""The n-step writer: turns each member's stream of one-step transitions into n-step transitions.

Sutton 1988; Mnih et al. 2016 and Hessel et al. 2018 (Rainbow) use it with DQN. The transition of step
``t`` becomes ``(s_t, a_t, R_t, s_{t+k}, terminated_{t+k-1}, gamma**k)`` with

    R_t = r_t + gamma r_{t+1} + ... + gamma**(k-1) r_{t+k-1},    k = min(n, steps to the end of the episode)

so the TD target is ``R_t + gamma**k (1 - terminated) max_a Q(s_{t+k}, a)``. At a termination ``k`` stops
there and the target does not bootstrap; at a time-limit truncation ``k`` stops there too and the target
bootstraps from the last real observation ``s_{t+k}`` (the environment's final observation, which the
storage receives as ``next_obs``).

Members write in lockstep (a sampler sees one slot per ``add`` for every member), so the writer delays
every member by the same ``n - 1`` steps: each push returns the n-step transition of the step ``n - 1``
pushes ago, which is always complete by then (it has ``n`` rewards, or its episode ended in between).
The first ``n - 1`` pushes return nothing, and the last ``n - 1`` steps of a run are never written.
Each member's numbers depend only on its own pushes, so member ``i`` writes what a solo run writes.

The storages own a writer when ``n_step > 1`` (``TransitionStorage``, ``FrameStorage``); with
``n_step = 1`` they write one-step transitions directly, exactly as before the writer existed.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np


class NStepTransition(NamedTuple):
    """What a push completes, one entry per member: fields of step ``t`` (``first``), fields of step
    ``t + k - 1`` (``last``: e.g. its ``next_obs`` is ``s_{t+k}``), the discounted return ``R_t``, whether
    step ``t + k - 1`` terminated, ``gamma**k`` and ``k``."""

    first: dict
    last: dict
    reward: np.ndarray  # [P] float64
    terminated: np.ndarray  # [P] bool
    discount: np.ndarray  # [P] float64
    k: np.ndarray  # [P] int64, 1 <= k <= n


class NStepWriter:
    """Per member, a window of the last ``n`` steps; ``push`` adds one step per member and returns the
    n-step transition of the step ``n - 1`` pushes ago (``None`` for the first ``n - 1`` pushes).

    ``first`` and ``last`` fields are arrays with the member axis first, of any shape and dtype; the writer
    keeps a copy of the last ``n`` of each and hands back, per member, the one of step ``t`` (``first``)
    and of step ``t + k - 1`` (``last``).
    """

    def __init__(self, n: int, gamma: float, population: int):
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
            raise ValueError(f"n_step must be a whole number >= 1, got {n!r}")
        if not 0.0 <= gamma <= 1.0:
            raise ValueError(f"gamma must be in [0, 1], got {gamma}")
        self.n, self.gamma, self.population = int(n), float(gamma), int(population)
        self.powers = float(gamma) ** np.arange(self.n + 1, dtype=np.float64)  # gamma**0 .. gamma**n
        self.rewards = np.zeros((self.n, self.population), dtype=np.float64)
        self.terminated = np.zeros((self.n, self.population), dtype=bool)
        self.done = np.zeros((self.n, self.population), dtype=bool)
        self.first: dict[str, np.ndarray] = {}
        self.last: dict[str, np.ndarray] = {}
        self.pushed = 0  # steps pushed so far
        self._cols = np.arange(self.population)

    @staticmethod
    def _keep(ring: dict, fields: dict, n: int, pos: int) -> None:
        for key, value in fields.items():
            value = np.asarray(value)
            if key not in ring:
                ring[key] = np.zeros((n, *value.shape), dtype=value.dtype)
            ring[key][pos] = value

    def push(self, reward, terminated, done, first: dict, last: dict | None = None) -> NStepTransition | None:
        """One step per member: its reward, whether it terminated, whether its episode ended (terminated or
        truncated), and the fields to hand back. Returns the transition completed by this push, or None."""
        n, pos = self.n, self.pushed % self.n
        self.rewards[pos] = reward
        self.terminated[pos] = terminated
        self.done[pos] = done
        self._keep(self.first, first, n, pos)
        self._keep(self.last, last or {}, n, pos)
        self.pushed += 1
        if self.pushed < n:
            return None
        order = (self.pushed + np.arange(n)) % n  # ring positions of steps t .. t + n - 1, oldest first
        done_w = self.done[order]  # [n, P]
        alive = np.ones_like(done_w)  # step t + j belongs to step t's episode
        alive[1:] = np.cumprod(~done_w[:-1], axis=0)
        k = alive.sum(axis=0)  # [P]
        # sum over j in order (axis 0): each member's sum is the same whatever the population
        ret = (np.where(alive, self.rewards[order], 0.0) * self.powers[:n, None]).sum(axis=0)
        last_pos = order[k - 1]  # [P] ring position of step t + k - 1
        cols = self._cols
        return NStepTransition(first={key: ring[order[0]] for key, ring in self.first.items()},
                               last={key: ring[last_pos, cols] for key, ring in self.last.items()},
                               reward=ret, terminated=self.terminated[last_pos, cols].copy(),
                               discount=self.powers[k], k=k)

    def restart_episodes(self) -> None:
        """Every member's episode ended at the last push (environments were reset outside the loop): the
        pending transitions stop there and bootstrap from its ``next_obs``, as at a truncation."""
        if self.pushed:
            self.done[(self.pushed - 1) % self.n] = True

    def state_dict(self) -> dict:
        return {"rewards": self.rewards.copy(), "terminated": self.terminated.copy(), "done": self.done.copy(),
                "first": {k: v.copy() for k, v in self.first.items()},
                "last": {k: v.copy() for k, v in self.last.items()}, "pushed": self.pushed}

    def load_state_dict(self, state: dict) -> None:
        """Shapes are checked, never broadcast: every window is ``[n, P, ...]`` (a ValueError names the field)."""
        for key in ("rewards", "terminated", "done"):
            saved = np.asarray(state[key])
            if saved.shape != getattr(self, key).shape or saved.dtype != getattr(self, key).dtype:
                raise ValueError(f"replay.storage.nstep.{key} has shape {list(saved.shape)} ({saved.dtype}) in the "
                                 f"checkpoint, expected {list(getattr(self, key).shape)} ({getattr(self, key).dtype})")
            getattr(self, key)[...] = saved
        for ring in ("first", "last"):
            for k, v in state[ring].items():
                if np.ndim(v) < 2 or np.shape(v)[:2] != (self.n, self.population):
                    raise ValueError(f"replay.storage.nstep.{ring}.{k} has shape {list(np.shape(v))} in the checkpoint, "
                                     f"expected [{self.n}, {self.population}, ...] (n_step, members)")
        self.first = {k: np.array(v) for k, v in state["first"].items()}
        self.last = {k: np.array(v) for k, v in state["last"].items()}
        self.pushed = int(state["pushed"])
