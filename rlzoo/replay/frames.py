"""Replay memory for stacked-frame observations that stores each frame once.

An Atari observation is a stack of the last ``K`` (4) frames. Consecutive observations share
``K - 1`` frames and ``s'`` of one transition is ``s`` of the next, so a memory that stores both
stacks keeps every frame ``2K`` times (about 56 KB per transition at 84x84, 28 GB for 1M
transitions even with ``s'`` derived from ``s``). ``FrameStorage`` keeps, per member:

- a circular *frame* store ``[F, H, W]`` written in order: one frame per step (the last frame of
  ``s'``) plus, at the start of an episode, the frames of the first stack that are not zero padding;
- a circular *transition* store of ``capacity`` rows: the absolute position of the last frame of
  ``s``, the position of the first frame of its episode segment, action, reward, terminated.

At sampling time ``s`` is rebuilt from positions ``a-K+1 .. a`` and ``s'`` from ``a-K+2 .. a+1``;
positions before the segment's first frame are zeros, exactly as the environment pads a new
episode's first stack, so no stack ever mixes two episodes. A new segment starts at the first
transition and after every ``terminated or truncated`` whose next observation does not continue the
previous ``s'`` (an episodic-life loss continues the game and its stack, so it continues the
segment). Leading all-zero frames of a new episode's first stack are not stored; any other
padding (e.g. a repeated first frame) is stored, so sampled stacks always equal the environment's.

The frame store holds ``frame_capacity`` frames (default ``capacity + capacity // 100 + 2K``): an
episode of ``L`` steps uses ``L + 1`` frames, so episodes of 100 steps or more never shrink the
memory below ``capacity`` transitions. With shorter episodes the oldest transitions whose frames
were overwritten are simply no longer valid: ``valid()`` offers a sampler only the usable ones (the
most recent), and ``len()`` reports their count.

On a CUDA device the stores live on the device; the host keeps only the integer bookkeeping and
sends the sampled positions (a few KB) per batch.

With ``n_step > 1`` the frames are still written at every step, and an ``NStepWriter`` (rlzoo.replay.nstep)
delays each transition row by ``n_step - 1`` steps: the row of step ``t`` holds ``R_t``, ``gamma**k`` and the
position of the last frame of ``s_{t+k}`` (``k`` frames after the last frame of ``s_t``: the ``k`` steps lie
in one episode segment), from which ``s'`` is rebuilt like ``s``.
"""

from __future__ import annotations

import functools
from typing import Sequence

import numpy as np
import torch

from rlzoo.replay.memory import Replay
from rlzoo.replay.nstep import NStepWriter
from rlzoo.replay.samplers import UniformSampler, ValidSlots
from rlzoo.replay.storage import Batch


class FrameStorage:
    """Transitions of stacked frames ``[K, H, W]`` (uint8), each frame stored once.

    ``frame_capacity`` optionally sets the frame store size per member (``None``:
    ``capacity + capacity // 100 + 2K + n_step - 1``). ``n_step > 1``: each row holds an n-step transition
    (module docstring) and a batch carries ``discount = gamma**k``.
    """

    def __init__(self, capacity: int, obs_shape: Sequence[int], obs_dtype, population: int,
                 device: str | torch.device = "cpu", frame_capacity: int | None = None, n_step: int = 1,
                 gamma: float = 0.99):
        obs_shape = tuple(int(x) for x in obs_shape)
        if len(obs_shape) != 3:
            raise ValueError(f"replay=frames needs stacked frames of shape [stack, height, width], got "
                             f"observations of shape {obs_shape}: use replay=uniform for this environment")
        if np.dtype(obs_dtype) != np.uint8:
            raise ValueError(f"replay=frames stores uint8 frames, got {np.dtype(obs_dtype)} observations: "
                             "use replay=uniform for this environment")
        if capacity < 1:
            raise ValueError(f"replay.capacity must be >= 1, got {capacity}")
        self.capacity = int(capacity)
        self.stack = obs_shape[0]
        K = self.stack
        self.frame_capacity = int(frame_capacity or self.capacity + self.capacity // 100 + 2 * K + max(n_step, 1) - 1)
        if self.frame_capacity < 2 * K + max(n_step, 1):  # a new episode's stack, then s .. s' of the newest row
            raise ValueError(f"replay.storage.frame_capacity must be >= {2 * K + max(n_step, 1)}, got "
                             f"{self.frame_capacity}")
        self.population = P = int(population)
        self.device = torch.device(device)
        C, F = self.capacity, self.frame_capacity
        dev = self.device
        self.frames = torch.zeros((P, F, *obs_shape[1:]), dtype=torch.uint8, device=dev)
        self.action = torch.zeros((P, C), dtype=torch.int64, device=dev)
        self.reward = torch.zeros((P, C), dtype=torch.float32, device=dev)
        self.terminated = torch.zeros((P, C), dtype=torch.float32, device=dev)
        self.writer = NStepWriter(n_step, gamma, P) if n_step != 1 else None
        if self.writer is not None:
            self.discount = torch.zeros((P, C), dtype=torch.float32, device=dev)
            self.next_last = np.zeros((P, C), dtype=np.int64)  # position of the last frame of s'
            self._TENSORS = self._TENSORS + ("discount",)
            self._ARRAYS = self._ARRAYS + ("next_last",)
        # Host bookkeeping (absolute positions, int64): per transition slot and per member.
        self.last = np.zeros((P, C), dtype=np.int64)   # position of the last frame of s
        self.first = np.zeros((P, C), dtype=np.int64)  # first stored frame of s's episode segment
        self.frames_written = np.zeros(P, dtype=np.int64)  # total frames written per member
        self.cursor = np.full(P, -1, dtype=np.int64)  # position of the last frame of the next s; -1: none
        self.seg_first = np.zeros(P, dtype=np.int64)
        self.oldest = np.zeros(P, dtype=np.int64)  # oldest usable transition (absolute count)
        self.pending = [None] * P  # after an episode end: the s' stack, to tell a continued game apart
        self.added = 0  # transitions added per member (absolute count)
        self._rows = np.arange(P)
        self._offsets = np.arange(-K + 1, 2)  # s: offsets[:-1], s': offsets[1:]
        cpu = dev.type == "cpu"
        self._np = {k: getattr(self, k).numpy() for k in self._TENSORS} if cpu else None

    def __len__(self) -> int:
        """Usable transitions (the smallest over members)."""
        return int(self.added - self.oldest.max()) if self.added else 0

    def valid(self) -> ValidSlots:
        """Each member's usable transitions: absolute counts ``oldest .. added - 1``."""
        return ValidSlots(self.oldest % self.capacity, self.added - self.oldest, self.capacity, self.oldest)

    # -- writing -------------------------------------------------------------------------------
    def _write_frames(self, i: int, frames: np.ndarray) -> None:
        pos = (self.frames_written[i] + np.arange(len(frames))) % self.frame_capacity
        if self._np is not None:
            self._np["frames"][i, pos] = frames
        else:
            self.frames[i, torch.from_numpy(pos).to(self.device)] = torch.from_numpy(np.ascontiguousarray(frames)).to(self.device)
        self.frames_written[i] += len(frames)

    def _start_segment(self, i: int, stack: np.ndarray) -> None:
        """Store a new episode's first stack, without its leading all-zero padding frames."""
        K = self.stack
        z = 0
        while z < K - 1 and not stack[z].any():
            z += 1
        self.seg_first[i] = self.frames_written[i]
        self._write_frames(i, stack[z:])
        self.cursor[i] = self.frames_written[i] - 1

    def restart_episodes(self) -> None:
        """The next ``add`` starts a new frame segment for every member (its ``obs`` is stored whole); an
        n-step writer ends its pending transitions at the last step."""
        self.cursor[:] = -1
        self.pending = [None] * self.population
        if self.writer is not None:
            self.writer.restart_episodes()

    def add(self, obs, action, reward, next_obs, terminated, truncated=None) -> int | None:
        """Store one transition per member (arrays with the member axis first); returns the slot written
        (the same for every member: members write in lockstep). With ``n_step > 1`` that slot holds the
        n-step transition of ``n_step - 1`` calls ago (None during the first ``n_step - 1`` calls).

        ``next_obs`` is the true next observation; ``obs`` of a member that did not end its episode
        at the previous call must be that call's ``next_obs`` (it is not stored again)."""
        obs, next_obs = np.asarray(obs), np.asarray(next_obs)
        terminated = np.asarray(terminated, dtype=bool)
        done = terminated | (np.zeros_like(terminated) if truncated is None else np.asarray(truncated, dtype=bool))
        if self.added < self._CHECK_FIRST:
            self._check_stacked(obs, next_obs, done)
        for i in range(self.population):
            if self.cursor[i] < 0:
                self._start_segment(i, obs[i])
            elif self.pending[i] is not None:
                if not np.array_equal(obs[i], self.pending[i]):
                    self._start_segment(i, obs[i])
            self.pending[i] = None  # also after a restart: a new segment continues nothing
        if self.writer is not None:
            return self._add_nstep(action, reward, next_obs, terminated, done)
        slot = self.added % self.capacity
        # s' adds one frame per member, right after the last frame of s.
        pos = (self.cursor + 1) % self.frame_capacity
        if self._np is not None:
            self._np["frames"][self._rows, pos] = next_obs[:, -1]
            self._np["action"][:, slot] = action
            self._np["reward"][:, slot] = reward
            self._np["terminated"][:, slot] = terminated
        else:
            dev = self.device
            self.frames[torch.from_numpy(self._rows).to(dev), torch.from_numpy(pos).to(dev)] = \
                torch.from_numpy(np.ascontiguousarray(next_obs[:, -1])).to(dev)
            self.action[:, slot] = torch.as_tensor(np.asarray(action), device=dev).long()
            self.reward[:, slot] = torch.as_tensor(np.asarray(reward, dtype=np.float32), device=dev)
            self.terminated[:, slot] = torch.as_tensor(terminated.astype(np.float32), device=dev)
        self.last[:, slot] = self.cursor
        self.first[:, slot] = self.seg_first
        self.frames_written = self.cursor + 2
        self.cursor = self.cursor + 1
        self.added += 1
        for i in np.flatnonzero(done):
            self.pending[i] = next_obs[i].copy()
        self._drop_overwritten()
        return slot

    def _add_nstep(self, action, reward, next_obs, terminated, done) -> int | None:
        """The frame of ``s'`` now; the row of the step ``n_step - 1`` calls ago, once the writer completes it."""
        pos = (self.cursor + 1) % self.frame_capacity
        if self._np is not None:
            self._np["frames"][self._rows, pos] = next_obs[:, -1]
        else:
            dev = self.device
            self.frames[torch.from_numpy(self._rows).to(dev), torch.from_numpy(pos).to(dev)] = \
                torch.from_numpy(np.ascontiguousarray(next_obs[:, -1])).to(dev)
        out = self.writer.push(reward, terminated, done, first={"last": self.cursor, "first": self.seg_first,
                                                                "action": action})
        self.frames_written = self.cursor + 2
        self.cursor = self.cursor + 1
        for i in np.flatnonzero(done):
            self.pending[i] = next_obs[i].copy()
        if out is None:
            return None
        slot = self.added % self.capacity
        values = {"action": out.first["action"], "reward": out.reward, "terminated": out.terminated,
                  "discount": out.discount}
        for key, value in values.items():
            if self._np is not None:
                self._np[key][:, slot] = value
            else:
                store = getattr(self, key)
                store[:, slot] = torch.as_tensor(np.asarray(value), device=self.device).to(store.dtype)
        self.last[:, slot] = out.first["last"]
        self.first[:, slot] = out.first["first"]
        self.next_last[:, slot] = out.first["last"] + out.k
        self.added += 1
        self._drop_overwritten()
        return slot

    _CHECK_FIRST = 64  # transitions whose observations are checked to be stacks of consecutive frames

    def _check_stacked(self, obs: np.ndarray, next_obs: np.ndarray, done: np.ndarray) -> None:
        """``s'`` must be ``s`` shifted by one frame (within an episode); MinAtar's channels are not."""
        for i in np.flatnonzero(~done):
            if not np.array_equal(next_obs[i, :-1], obs[i, 1:]):
                raise ValueError(f"replay=frames needs observations that are stacks of consecutive frames (s' = s "
                                 f"shifted by one frame); these {tuple(obs.shape[1:])} observations are not: "
                                 "use replay=uniform for this environment")

    def _drop_overwritten(self) -> None:
        """Advance each member's oldest usable transition past those whose frames were overwritten
        (or whose slot was reused)."""
        self.oldest = np.maximum(self.oldest, self.added - self.capacity)
        lowest_kept = self.frames_written - self.frame_capacity  # frames below this position are gone
        for i in range(self.population):
            while self.oldest[i] < self.added:
                slot = self.oldest[i] % self.capacity
                needed = max(self.first[i, slot], self.last[i, slot] - self.stack + 1)
                if needed >= lowest_kept[i]:
                    break
                self.oldest[i] += 1

    # -- reading -------------------------------------------------------------------------------
    def frame_positions(self, slots: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Frame store indices ``[P, B, K + 1]`` (``s`` is ``[..., :K]``, ``s'`` is ``[..., 1:]``; with
        ``n_step > 1`` ``[P, B, 2K]``, ``s'`` is ``[..., K:]``) and a mask of the positions that are zero
        padding (before the episode segment's first frame)."""
        rows = self._rows[:, None]
        if self.writer is None:
            pos = self.last[rows, slots][..., None] + self._offsets  # [P, B, K+1]
        else:  # s and s' apart: [P, B, 2K]
            back = self._offsets[:-1]
            pos = np.concatenate([self.last[rows, slots][..., None] + back,
                                  self.next_last[rows, slots][..., None] + back], axis=-1)
        pad = pos < self.first[rows, slots][..., None]
        return pos % self.frame_capacity, pad

    def gather(self, indices: np.ndarray) -> Batch:
        """The transitions in slots ``indices`` ``[P, B]`` with their stacks rebuilt (tensors on the device)."""
        slots = np.asarray(indices, dtype=np.int64)
        idx, pad = self.frame_positions(slots)
        rows = self._rows[:, None]
        K = self.stack
        if self._np is not None:
            x = self._np["frames"][rows[..., None], idx]  # [P, B, K+1, H, W]
            if pad.any():
                x[pad] = 0
            x = torch.from_numpy(x)
            a, r, t = (torch.from_numpy(self._np[k][rows, slots]) for k in ("action", "reward", "terminated"))
            d = torch.from_numpy(self._np["discount"][rows, slots]) if self.writer is not None else None
        else:
            dev = self.device
            idx_t, slots_t = torch.from_numpy(idx).to(dev), torch.from_numpy(slots).to(dev)
            rows_t = torch.arange(self.population, device=dev)[:, None]
            x = self.frames[rows_t[..., None], idx_t]
            x = x * (~torch.from_numpy(pad).to(dev))[..., None, None]
            a, r, t = (getattr(self, k)[rows_t, slots_t] for k in ("action", "reward", "terminated"))
            d = self.discount[rows_t, slots_t] if self.writer is not None else None
        return Batch(obs=x[:, :, :K], action=a, reward=r, next_obs=x[:, :, -K:], terminated=t, indices=slots,
                     discount=d)

    # -- checkpointing -------------------------------------------------------------------------
    @staticmethod
    def bytes_needed(capacity: int, obs_shape: Sequence[int], obs_dtype, population: int,
                     frame_capacity: int | None = None, n_step: int = 1, **_) -> int:
        """Bytes the constructor allocates for these arguments (without allocating them): per member, the
        uint8 frame store and, per slot, an int64 action, float32 reward and terminated flag and two int64
        positions (n_step > 1: a float32 discount and one more int64 position)."""
        K, C, n = int(obs_shape[0]), int(capacity), max(int(n_step), 1)
        frames = int(frame_capacity or C + C // 100 + 2 * K + n - 1)
        for d in obs_shape[1:]:
            frames *= int(d)
        per_slot = 8 + 4 + 4 + 8 + 8 + (4 + 8 if n_step != 1 else 0)
        return int(population) * (frames + C * per_slot)

    _TENSORS = ("frames", "action", "reward", "terminated")
    _ARRAYS = ("last", "first", "frames_written", "cursor", "seg_first", "oldest")

    def _filled(self, key: str, frames_written, added: int) -> int:
        """How many leading positions along axis 1 of ``key`` have been written: frame positions up to the
        largest member's ``frames_written`` (or the whole frame store), transition slots up to ``added`` (or
        the whole capacity). Per-member arrays ([P]) are whole."""
        if key == "frames":
            return int(min(np.max(frames_written, initial=0), self.frame_capacity))
        if getattr(self, key).ndim >= 2:
            return min(int(added), self.capacity)
        return getattr(self, key).shape[0]

    def state_dict(self) -> dict:
        """The written part of the frame and transition stores (``[P, filled, ...]``), not the whole allocation:
        the positions after it have never been written and are zeros in a fresh storage too."""
        state = {}
        for k in self._TENSORS + self._ARRAYS:
            value = getattr(self, k)
            if value.ndim >= 2:
                value = value[:, :self._filled(k, self.frames_written, self.added)]
            state[k] = value.copy() if isinstance(value, np.ndarray) else value
        state.update(added=self.added, pending=[None if p is None else p.copy() for p in self.pending])
        if self.writer is not None:
            state["nstep"] = self.writer.state_dict()
        return state

    def load_state_dict(self, state: dict) -> None:
        """Restore a ``state_dict()`` into a fresh storage (also a version-4 checkpoint's whole allocation).
        Shapes are checked, never broadcast: a ValueError names the field."""
        added = int(state["added"])
        if added < 0 or len(state["pending"]) != self.population:
            raise ValueError(f"replay.storage has added={added} and {len(state['pending'])} pending entries in the "
                             f"checkpoint, which a storage of {self.population} members cannot hold")
        for k in self._TENSORS + self._ARRAYS:
            saved, store = state[k], getattr(self, k)
            full = store.shape[1] if store.ndim >= 2 else store.shape[0]
            n = self._filled(k, state["frames_written"], added)
            if store.ndim >= 2 and saved.ndim >= 2 and saved.shape[1] == full:
                n = full  # a version-4 checkpoint: the whole allocation
            want = (store.shape[0], n, *store.shape[2:]) if store.ndim >= 2 else tuple(store.shape)
            if tuple(saved.shape) != want or str(saved.dtype).removeprefix("torch.") != \
                    str(store.dtype).removeprefix("torch."):
                raise ValueError(f"replay.storage.{k} has shape {list(saved.shape)} "
                                 f"({str(saved.dtype).removeprefix('torch.')}) in the checkpoint, expected "
                                 f"{list(want)} ({str(store.dtype).removeprefix('torch.')})")
            target = store[:, :n] if store.ndim >= 2 else store
            if isinstance(store, torch.Tensor):
                target.copy_(torch.as_tensor(saved))
            else:
                target[...] = saved
        self.added = added
        self.pending = [None if p is None else np.array(p) for p in state["pending"]]
        if self.writer is not None:
            self.writer.load_state_dict(state["nstep"])


class FrameReplay(Replay):
    """Uniform replay over stacked frames, each frame stored once: ``Replay`` with ``FrameStorage`` and
    ``UniformSampler``. Same constructor as ``UniformReplay``, plus ``frame_capacity``."""

    def __init__(self, capacity: int, batch_size: int, obs_shape: Sequence[int], obs_dtype,
                 seeds: Sequence[int], device: str | torch.device = "cpu", frame_capacity: int | None = None):
        super().__init__(capacity, batch_size, functools.partial(FrameStorage, frame_capacity=frame_capacity),
                         UniformSampler, obs_shape, obs_dtype, seeds, device)
