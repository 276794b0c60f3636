"""Samplers: which stored transitions a minibatch replays, and with what importance weight.

A sampler works in the storage's slot space. The storage describes, per member, the slots that may be
sampled (``ValidSlots``: a circular range, which is always the most recently written transitions); the
replay tells the sampler which slot each ``add`` wrote (``added``) and, after a learner step, the new
priorities of the sampled slots (``update``). A sampler owns its random streams and serialises them.

Protocol (duck-typed; ``UniformSampler`` is the reference):

- ``sample(valid, batch_size) -> (indices [P, B] int64 slots, weights [P, B] float32 or None)``
- ``update(indices, priorities)``; ``added(slot)`` (the slot every member just wrote: members write in lockstep)
- ``state_dict()`` / ``load_state_dict(state)``
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import numpy as np

from rlzoo.seeding import REPLAY, member_rngs


class ValidSlots(NamedTuple):
    """Member ``i`` may sample the ``size[i]`` slots ``(start[i] + j) % capacity``, ``0 <= j < size[i]``
    (its ``size[i]`` most recently written transitions)."""

    start: np.ndarray  # [P] int64
    size: np.ndarray  # [P] int64
    capacity: int


class UniformSampler:
    """Uniform with replacement over each member's valid slots, from the member's own generator
    (``seed + i``'s REPLAY stream): member ``i`` of a population draws what a solo run with that seed draws.
    Importance weights are ``None`` (all equal)."""

    def __init__(self, seeds: Sequence[int]):
        self.rngs = member_rngs(seeds, REPLAY)

    def sample(self, valid: ValidSlots, batch_size: int) -> tuple[np.ndarray, None]:
        size = valid.size.reshape(-1, 1)
        # floor(u * size) for uniform u in [0, 1): uniform over the slots (to 2**-53), at half the cost of
        # Generator.integers; the minimum guards the one rounding case where u * size rounds up to size.
        u = np.stack([rng.random(batch_size) for rng in self.rngs])
        u *= size
        pos = u.astype(np.int64)
        np.minimum(pos, size - 1, out=pos)
        if valid.start.any():
            pos += valid.start[:, None]
            pos %= valid.capacity
        return pos, None

    def update(self, indices: np.ndarray, priorities) -> None:
        """Uniform sampling ignores priorities."""

    def added(self, slot: int) -> None:
        """Uniform sampling keeps no per-slot state."""

    def state_dict(self) -> dict:
        return {"rngs": [rng.bit_generator.state for rng in self.rngs]}

    def load_state_dict(self, state: dict) -> None:
        for rng, s in zip(self.rngs, state["rngs"]):
            rng.bit_generator.state = s
