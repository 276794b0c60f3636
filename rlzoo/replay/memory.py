"""Replay = storage + sampler.

The storage keeps the transitions (``TransitionStorage``: each ``(s, a, r, s')`` whole;
``FrameStorage``: each pixel frame once) and says which slots may be sampled; the sampler chooses slots
and importance weights (``UniformSampler``; a prioritized sampler fits the same seam). ``Replay`` wires
them together and is what the loop and the checkpoint talk to. In a config both arrive as Hydra partials
that ``Replay`` completes with the run-time facts::

    _target_: rlzoo.replay.Replay
    capacity: ${buffer_size}
    batch_size: ${batch_size}
    storage: {_target_: rlzoo.replay.TransitionStorage, _partial_: true}
    sampler: {_target_: rlzoo.replay.UniformSampler, _partial_: true}

Storage is completed with ``capacity, obs_shape, obs_dtype, population, device``; sampler with ``seeds``
and, where it names them, ``capacity`` and ``total_updates`` (the run's learner updates, for a schedule such
as prioritized replay's beta). n-step returns are the storage's (``n_step``, ``gamma``: its writer).
"""

from __future__ import annotations

import inspect
from typing import Callable, Sequence

import numpy as np
import torch

from rlzoo.replay.samplers import UniformSampler
from rlzoo.replay.storage import Batch, TransitionStorage


class Replay:
    """Experience replay for a population of ``len(seeds)`` members: ``add`` one transition per member,
    ``sample`` ``batch_size`` per member."""

    def __init__(self, capacity: int, batch_size: int, storage: Callable, sampler: Callable,
                 obs_shape: Sequence[int], obs_dtype, seeds: Sequence[int], device: str | torch.device = "cpu",
                 total_updates: int | None = None):
        if capacity < 1:
            raise ValueError(f"replay.capacity must be >= 1, got {capacity}")
        if batch_size < 1:
            raise ValueError(f"replay.batch_size must be >= 1, got {batch_size}")
        self.capacity, self.batch_size = int(capacity), int(batch_size)
        self.population = len(seeds)
        self.device = torch.device(device)
        self.storage = storage(capacity=self.capacity, obs_shape=tuple(int(x) for x in obs_shape),
                               obs_dtype=obs_dtype, population=self.population, device=self.device)
        facts = {"capacity": self.capacity, "total_updates": total_updates}
        named = inspect.signature(sampler).parameters
        self.sampler = sampler(seeds=[int(s) for s in seeds], **{k: v for k, v in facts.items() if k in named})

    def __len__(self) -> int:
        """Transitions that can be sampled (the smallest number over members)."""
        return len(self.storage)

    def add(self, obs, action, reward, next_obs, terminated, truncated=None) -> None:
        """Store one transition per member (arrays with the member axis first); ``next_obs`` is the true
        next observation, also at the end of an episode. (An n-step storage writes with a delay: a call may
        write nothing.)"""
        slot = self.storage.add(obs, action, reward, next_obs, terminated, truncated)
        if slot is not None:
            self.sampler.added(slot)

    def sample_indices(self) -> np.ndarray:
        """Draw ``[P, batch_size]`` slots (advances the sampler's streams, as ``sample`` does)."""
        return self._draw()[0]

    def _draw(self):
        valid = self.storage.valid()
        if not valid.size.all():
            raise RuntimeError("cannot sample from an empty replay memory")
        return self.sampler.sample(valid, self.batch_size)

    def sample(self) -> Batch:
        """``batch_size`` transitions per member with the sampled slots (``indices``) and, from a
        non-uniform sampler, their importance weights."""
        indices, weights = self._draw()
        batch = self.storage.gather(indices)
        if weights is not None:
            batch = batch._replace(weights=torch.as_tensor(weights, dtype=torch.float32, device=self.device))
        return batch

    def update_priorities(self, indices: np.ndarray, priorities) -> None:
        """New priorities (e.g. ``|td_error|`` ``[P, B]``) of the slots ``indices`` of the last sample."""
        self.sampler.update(indices, priorities)

    def restart_episodes(self) -> None:
        """The next ``add`` starts a new episode for every member (after environments were reset outside
        the loop, e.g. on resume when they could not be restored exactly)."""
        self.storage.restart_episodes()

    def state_dict(self) -> dict:
        return {"storage": self.storage.state_dict(), "sampler": self.sampler.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.storage.load_state_dict(state["storage"])
        self.sampler.load_state_dict(state["sampler"])


class UniformReplay(Replay):
    """Uniform replay over whole transitions: ``Replay`` with ``TransitionStorage`` and ``UniformSampler``."""

    def __init__(self, capacity: int, batch_size: int, obs_shape: Sequence[int], obs_dtype,
                 seeds: Sequence[int], device: str | torch.device = "cpu"):
        super().__init__(capacity, batch_size, TransitionStorage, UniformSampler, obs_shape, obs_dtype, seeds,
                         device)
