"""How the target network follows the online network.

Both strategies are called by the agent once after every learner update with the number of updates done so
far; any callable ``(online, target, updates) -> bool`` works in their place.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class HardSync:
    """Copy the online parameters into the target every ``every`` learner updates
    (``every=1`` is "no target network": the target always equals the online network)."""

    every: int

    def __post_init__(self):
        if self.every < 1:
            raise ValueError(f"target_sync.every must be >= 1 learner update, got {self.every}")

    @torch.no_grad()
    def __call__(self, online: nn.Module, target: nn.Module, updates: int) -> bool:
        if updates % self.every != 0:
            return False
        for t, o in zip(target.parameters(), online.parameters()):
            t.copy_(o)
        return True


@dataclass(frozen=True)
class SoftSync:
    """Polyak averaging after every update: ``target <- tau * online + (1 - tau) * target``."""

    tau: float

    def __post_init__(self):
        if not 0.0 < self.tau <= 1.0:
            raise ValueError(f"target_sync.tau must be in (0, 1], got {self.tau}")

    @torch.no_grad()
    def __call__(self, online: nn.Module, target: nn.Module, updates: int) -> bool:
        for t, o in zip(target.parameters(), online.parameters()):
            t.lerp_(o, self.tau)
        return True
