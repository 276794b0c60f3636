"""Replay memories with a population axis: each member has its own storage and its own sampling stream.

``Replay`` = a storage (``TransitionStorage``, ``FrameStorage``) + a sampler (``UniformSampler``);
``UniformReplay`` and ``FrameReplay`` are the two ready-made pairs.
"""

from rlzoo.replay.samplers import UniformSampler, ValidSlots
from rlzoo.replay.storage import Batch, TransitionStorage, torch_dtype
from rlzoo.replay.memory import Replay, UniformReplay
from rlzoo.replay.frames import FrameReplay, FrameStorage

__all__ = ["Batch", "Replay", "UniformReplay", "FrameReplay", "TransitionStorage", "FrameStorage",
           "UniformSampler", "ValidSlots", "torch_dtype"]
