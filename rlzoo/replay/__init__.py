"""Replay memories with a population axis: each member has its own storage and its own sampling stream.

``Replay`` = a storage (``TransitionStorage``, ``FrameStorage``) + a sampler (``UniformSampler``,
``PrioritizedSampler``); ``UniformReplay`` and ``FrameReplay`` are the two ready-made uniform pairs. A storage
built with ``n_step > 1`` writes n-step transitions through an ``NStepWriter``.
"""

from rlzoo.replay.nstep import NStepTransition, NStepWriter
from rlzoo.replay.samplers import PrioritizedSampler, SumTree, UniformSampler, ValidSlots
from rlzoo.replay.storage import Batch, TransitionStorage, torch_dtype
from rlzoo.replay.memory import Replay, UniformReplay
from rlzoo.replay.frames import FrameReplay, FrameStorage

__all__ = ["Batch", "Replay", "UniformReplay", "FrameReplay", "TransitionStorage", "FrameStorage",
           "UniformSampler", "PrioritizedSampler", "SumTree", "ValidSlots", "NStepWriter", "NStepTransition",
           "torch_dtype"]
