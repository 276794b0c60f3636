"""Replay memories with a population axis: each member has its own storage and its own sampling stream."""

from rlzoo.replay.storage import Batch, UniformReplay, torch_dtype
from rlzoo.replay.frames import FrameReplay

__all__ = ["Batch", "UniformReplay", "FrameReplay", "torch_dtype"]
