"""Exploration schedules."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class LinearSchedule:
    """Goes linearly from ``start`` to ``end`` over ``duration`` steps, then stays at ``end``."""

    start: float
    end: float
    duration: int

    def __call__(self, step: int) -> float:
        if self.duration <= 0:
            return self.end
        frac = min(max(step, 0) / self.duration, 1.0)
        return self.start + frac * (self.end - self.start)
