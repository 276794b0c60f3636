"""Uniform experience replay with a population axis.

Each of the ``P`` members has its own circular storage and its own sampling generator, so member ``i``
replays exactly what a solo run with seed ``seed + i`` would replay. Storage lives on the training
device: a sampled batch needs no host-to-device copy beyond the sampled indices.
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import numpy as np
import torch

from rlzoo.seeding import REPLAY, member_rngs

class Batch(NamedTuple):
    """A sampled minibatch; every field has shape ``[P, B, ...]``."""

    obs: torch.Tensor
    action: torch.Tensor
    reward: torch.Tensor
    next_obs: torch.Tensor
    terminated: torch.Tensor


_TORCH_DTYPES = {np.dtype(np.uint8): torch.uint8, np.dtype(np.float32): torch.float32,
                 np.dtype(np.float64): torch.float32, np.dtype(np.int64): torch.int64,
                 np.dtype(np.int32): torch.int64}


def torch_dtype(dtype) -> torch.dtype:
    """The storage dtype for an observation dtype (float64 is stored as float32, ints as int64)."""
    return _TORCH_DTYPES.get(np.dtype(dtype), torch.float32)


class UniformReplay:
    """Circular buffer of ``capacity`` transitions per member; ``sample()`` draws ``batch_size``
    stored transitions per member uniformly with replacement.

    ``next_obs`` is the true next observation, also when the episode ended there (the environment's
    final observation, not the first observation of the next episode).
    """

    def __init__(self, capacity: int, batch_size: int, obs_shape: Sequence[int], obs_dtype,
                 seeds: Sequence[int], device: str | torch.device = "cpu"):
        if capacity < 1:
            raise ValueError(f"replay.capacity must be >= 1, got {capacity}")
        if not 1 <= batch_size:
            raise ValueError(f"replay.batch_size must be >= 1, got {batch_size}")
        self.capacity, self.batch_size = int(capacity), int(batch_size)
        self.population = len(seeds)
        self.device = torch.device(device)
        P, C = self.population, self.capacity
        dtype = torch_dtype(obs_dtype)
        self.obs = torch.zeros((P, C, *obs_shape), dtype=dtype, device=self.device)
        self.next_obs = torch.zeros_like(self.obs)
        self.action = torch.zeros((P, C), dtype=torch.int64, device=self.device)
        self.reward = torch.zeros((P, C), dtype=torch.float32, device=self.device)
        self.terminated = torch.zeros((P, C), dtype=torch.float32, device=self.device)
        self.rngs = member_rngs(seeds, REPLAY)
        self._rows = torch.arange(P, device=self.device).unsqueeze(1)
        # On the CPU, write and gather through numpy views of the same memory (no per-call torch overhead).
        self._np = ({k: getattr(self, k).numpy() for k in self._FIELDS} if self.device.type == "cpu" else None)
        # ... and gather with np.take on the member-major flattened storage: row i * C + slot.
        self._np_flat = ({k: v.reshape(P * C, *v.shape[2:]) for k, v in self._np.items()} if self._np else None)
        self._np_offsets = np.arange(P)[:, None] * C
        self.pos = 0
        self.size = 0

    _FIELDS = ("obs", "action", "reward", "next_obs", "terminated")

    def __len__(self) -> int:
        return self.size

    def add(self, obs, action, reward, next_obs, terminated, truncated=None) -> None:
        """Store one transition per member (arrays with the member axis first)."""
        for key, value in zip(self._FIELDS, (obs, action, reward, next_obs, terminated)):
            if self._np is not None:
                self._np[key][:, self.pos] = value
            else:
                store = getattr(self, key)
                store[:, self.pos] = torch.as_tensor(np.asarray(value), device=self.device).to(store.dtype)
        self.pos = (self.pos + 1) % self.capacity
        self.size = min(self.size + 1, self.capacity)

    def sample_indices(self) -> np.ndarray:
        """``[P, batch_size]`` slot indices, uniform over the written slots, one generator per member."""
        if self.size == 0:
            raise RuntimeError("cannot sample from an empty replay memory")
        # floor(u * size) for uniform u in [0, 1): uniform over the slots (to 2**-53), at half the cost of
        # Generator.integers; the minimum guards the one rounding case where u * size rounds up to size.
        u = np.stack([rng.random(self.batch_size) for rng in self.rngs])
        return np.minimum((u * self.size).astype(np.int64), self.size - 1)

    def sample(self) -> Batch:
        idx = self.sample_indices()
        if self._np is not None:
            flat = idx + self._np_offsets
            return Batch(*(torch.from_numpy(self._np_flat[k].take(flat, axis=0)) for k in self._FIELDS))
        idx = torch.from_numpy(idx).to(self.device)
        return Batch(*(getattr(self, k)[self._rows, idx] for k in self._FIELDS))

    def state_dict(self) -> dict:
        return {"obs": self.obs, "next_obs": self.next_obs, "action": self.action, "reward": self.reward,
                "terminated": self.terminated, "pos": self.pos, "size": self.size,
                "rngs": [rng.bit_generator.state for rng in self.rngs]}

    def load_state_dict(self, state: dict) -> None:
        for key in ("obs", "next_obs", "action", "reward", "terminated"):
            getattr(self, key).copy_(state[key])
        self.pos, self.size = int(state["pos"]), int(state["size"])
        for rng, s in zip(self.rngs, state["rngs"]):
            rng.bit_generator.state = s
