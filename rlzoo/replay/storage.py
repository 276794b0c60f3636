"""Transition storage with a population axis, and the ``Batch`` every replay returns.

Each of the ``P`` members has its own circular storage, so member ``i`` stores exactly what a solo run
with seed ``seed + i`` would store. Storage lives on the training device: a gathered batch needs no
host-to-device copy beyond the sampled indices.
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import numpy as np
import torch

from rlzoo.replay.nstep import NStepWriter
from rlzoo.replay.samplers import ValidSlots


class Batch(NamedTuple):
    """A sampled minibatch; every field has shape ``[P, B, ...]``."""

    obs: torch.Tensor
    action: torch.Tensor
    reward: torch.Tensor
    next_obs: torch.Tensor
    terminated: torch.Tensor
    indices: np.ndarray | None = None  # [P, B] int64 sampled slots (host), for update_priorities
    weights: torch.Tensor | None = None  # [P, B] float32 importance weights; None: uniform sampling
    discount: torch.Tensor | None = None  # [P, B] float32 gamma**k of an n-step transition; None: the agent's gamma


_TORCH_DTYPES = {np.dtype(np.uint8): torch.uint8, np.dtype(np.float32): torch.float32,
                 np.dtype(np.float64): torch.float32, np.dtype(np.int64): torch.int64,
                 np.dtype(np.int32): torch.int64}


def torch_dtype(dtype) -> torch.dtype:
    """The storage dtype for an observation dtype (float64 is stored as float32, ints as int64)."""
    return _TORCH_DTYPES.get(np.dtype(dtype), torch.float32)


class TransitionStorage:
    """Circular store of ``capacity`` transitions ``(s, a, r, s', terminated)`` per member.

    ``next_obs`` is the true next observation, also when the episode ended there (the environment's
    final observation, not the first observation of the next episode). Slots ``0 .. len - 1`` are the
    written ones; once full, every slot is.

    ``n_step > 1``: transitions pass through an ``NStepWriter`` (``rlzoo.replay.nstep``) and each slot holds
    ``(s_t, a_t, R_t, s_{t+k}, terminated, gamma**k)``; a batch then carries ``discount = gamma**k``.
    """

    def __init__(self, capacity: int, obs_shape: Sequence[int], obs_dtype, population: int,
                 device: str | torch.device = "cpu", n_step: int = 1, gamma: float = 0.99):
        if capacity < 1:
            raise ValueError(f"replay.capacity must be >= 1, got {capacity}")
        self.capacity = int(capacity)
        self.population = P = int(population)
        self.device = torch.device(device)
        C = self.capacity
        dtype = torch_dtype(obs_dtype)
        self.obs = torch.zeros((P, C, *obs_shape), dtype=dtype, device=self.device)
        self.next_obs = torch.zeros_like(self.obs)
        self.action = torch.zeros((P, C), dtype=torch.int64, device=self.device)
        self.reward = torch.zeros((P, C), dtype=torch.float32, device=self.device)
        self.terminated = torch.zeros((P, C), dtype=torch.float32, device=self.device)
        self.writer = NStepWriter(n_step, gamma, P) if n_step != 1 else None
        if self.writer is not None:
            self.discount = torch.zeros((P, C), dtype=torch.float32, device=self.device)
            self._FIELDS = self._FIELDS + ("discount",)
        self._rows = torch.arange(P, device=self.device).unsqueeze(1)
        # On the CPU, write and gather through numpy views of the same memory (no per-call torch overhead).
        self._np = ({k: getattr(self, k).numpy() for k in self._FIELDS} if self.device.type == "cpu" else None)
        # ... and gather with np.take on the member-major flattened storage: row i * C + slot.
        self._np_flat = ({k: v.reshape(P * C, *v.shape[2:]) for k, v in self._np.items()} if self._np else None)
        self._np_offsets = np.arange(P)[:, None] * C
        self._start = np.zeros(P, dtype=np.int64)  # valid slots always start at slot 0
        self.pos = 0
        self.size = 0

    @staticmethod
    def bytes_needed(capacity: int, obs_shape: Sequence[int], obs_dtype, population: int, n_step: int = 1,
                     **_) -> int:
        """Bytes the constructor allocates for these arguments (without allocating them): per member and slot,
        ``s`` and ``s'`` in the storage dtype, an int64 action, float32 reward and terminated flag (and
        float32 discount for ``n_step > 1``)."""
        obs = torch_dtype(obs_dtype).itemsize
        for d in obs_shape:
            obs *= int(d)
        return int(population) * int(capacity) * (2 * obs + 8 + 4 + 4 + (4 if n_step != 1 else 0))

    _FIELDS = ("obs", "action", "reward", "next_obs", "terminated")

    def __len__(self) -> int:
        return self.size

    def valid(self) -> ValidSlots:
        """Slots ``0 .. size - 1`` for every member."""
        return ValidSlots(self._start, np.full(self.population, self.size, dtype=np.int64), self.capacity)

    def add(self, obs, action, reward, next_obs, terminated, truncated=None) -> int | None:
        """Store one transition per member (arrays with the member axis first); returns the slot written
        (the same for every member: members write in lockstep). ``truncated`` is not needed: ``s'`` is
        stored whole. With ``n_step > 1`` the slot written holds the n-step transition of ``n_step - 1``
        calls ago (None during the first ``n_step - 1`` calls)."""
        values = (obs, action, reward, next_obs, terminated)
        if self.writer is not None:
            done = np.asarray(terminated, dtype=bool)
            if truncated is not None:
                done = done | np.asarray(truncated, dtype=bool)
            out = self.writer.push(reward, terminated, done, first={"obs": obs, "action": action},
                                   last={"next_obs": next_obs})
            if out is None:
                return None
            values = (out.first["obs"], out.first["action"], out.reward, out.last["next_obs"], out.terminated,
                      out.discount)
        for key, value in zip(self._FIELDS, values):
            if self._np is not None:
                self._np[key][:, self.pos] = value
            else:
                store = getattr(self, key)
                store[:, self.pos] = torch.as_tensor(np.asarray(value), device=self.device).to(store.dtype)
        slot = self.pos
        self.pos = (self.pos + 1) % self.capacity
        self.size = min(self.size + 1, self.capacity)
        return slot

    def gather(self, indices: np.ndarray) -> Batch:
        """The transitions stored in slots ``indices`` ``[P, B]`` (member ``i`` reads its own row ``i``)."""
        indices = np.asarray(indices, dtype=np.int64)
        if self._np is not None:
            flat = indices + self._np_offsets
            fields = (torch.from_numpy(self._np_flat[k].take(flat, axis=0)) for k in self._FIELDS)
        else:
            idx = torch.from_numpy(indices).to(self.device)
            fields = (getattr(self, k)[self._rows, idx] for k in self._FIELDS)
        if self.writer is not None:
            *fields, discount = fields
            return Batch(*fields, indices=indices, discount=discount)
        return Batch(*fields, indices=indices)

    def restart_episodes(self) -> None:
        """Each transition stores its own ``s`` and ``s'``; an n-step writer ends its pending transitions
        at the last step (they bootstrap from its ``s'``)."""
        if self.writer is not None:
            self.writer.restart_episodes()

    def state_dict(self) -> dict:
        """The filled slots ``0 .. size - 1`` of each field (``[P, size, ...]`` views), not the whole allocation:
        the slots after them have never been written and are zeros in a fresh storage too."""
        n = self.size
        state = {key: getattr(self, key)[:, :n] for key in self._FIELDS}
        state.update(pos=self.pos, size=self.size)
        if self.writer is not None:
            state["nstep"] = self.writer.state_dict()
        return state

    def load_state_dict(self, state: dict) -> None:
        """Restore a ``state_dict()`` into a fresh storage (also a version-4 checkpoint's whole allocation).
        Shapes are checked, never broadcast: a ValueError names the field."""
        size, pos, C = int(state["size"]), int(state["pos"]), self.capacity
        if not 0 <= size <= C or not 0 <= pos < C or (size < C and pos != size):
            raise ValueError(f"replay.storage has size={size}, pos={pos} in the checkpoint, which a storage of "
                             f"capacity {C} cannot hold")
        for key in self._FIELDS:
            saved, store = torch.as_tensor(state[key]), getattr(self, key)
            n = C if saved.dim() >= 2 and saved.shape[1] == C else size  # the whole allocation, or the filled part
            if tuple(saved.shape) != (store.shape[0], n, *store.shape[2:]) or saved.dtype != store.dtype:
                raise ValueError(f"replay.storage.{key} has shape {list(saved.shape)} "
                                 f"({str(saved.dtype).removeprefix('torch.')}) in the checkpoint, expected "
                                 f"{[store.shape[0], size, *store.shape[2:]]} ({str(store.dtype).removeprefix('torch.')})")
            store[:, :n].copy_(saved)
        if self.writer is not None:
            self.writer.load_state_dict(state["nstep"])
        self.pos, self.size = pos, size
