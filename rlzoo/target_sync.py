"""How the target network follows the online network.

``HardSync`` and ``SoftSync`` are called by the agent once after every learner update with the number of
updates done so far; any callable ``(online, target, updates) -> bool`` works in their place. A rule counted
in environment steps (``EnvStepHardSync``) also has ``before_update(online, target, last_step, step)``,
which the agent calls before an update made at environment step ``step``.
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


@dataclass(frozen=True)
class EnvStepHardSync:
    """Copy the online parameters into the target whenever the environment step count passes a multiple of
    ``every`` (stable-baselines3's ``target_update_interval``). The copy is made before the first update
    at or after that step, so with bursts of updates (``train_freq`` steps apart, ``gradient_steps`` each)
    the target stays fixed within a burst when ``every`` is smaller than ``train_freq``."""

    every: int

    def __post_init__(self):
        if self.every < 1:
            raise ValueError(f"target_sync.every must be >= 1 environment step, got {self.every}")

    def __call__(self, online: nn.Module, target: nn.Module, updates: int) -> bool:
        return False  # nothing after an update: see before_update

    @torch.no_grad()
    def before_update(self, online: nn.Module, target: nn.Module, last_step: int, step: int) -> bool:
        """Copy if a multiple of ``every`` lies in ``(last_step, step]`` (``last_step``: the environment
        step of the previous update, 0 before the first)."""
        if step // self.every <= last_step // self.every:
            return False
        for t, o in zip(target.parameters(), online.parameters()):
            t.copy_(o)
        return True
