"""A progress line for long runs: redrawn in place on a terminal, a plain log line every
``log_interval`` seconds otherwise (so batch logs are not flooded)."""

from __future__ import annotations

import sys
import time
from typing import Sequence, TextIO


class Progress:
    def __init__(self, total: int, stream: TextIO | None = None, enabled: bool = True,
                 tty_interval: float = 0.5, log_interval: float = 30.0):
        self.total = total
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.interval = tty_interval if self.tty else log_interval
        self.start = self._last = time.perf_counter()

    def line(self, step: int, sps: float, recent: Sequence[float | None]) -> str:
        shown = [f"{r:.1f}" if r is not None else "-" for r in recent[:8]]
        more = f" (+{len(recent) - 8})" if len(recent) > 8 else ""
        pct = 100.0 * step / max(self.total, 1)
        return f"step {step:,}/{self.total:,} ({pct:.0f}%) | {sps:,.0f} steps/s | return [{', '.join(shown)}]{more}"

    def update(self, step: int, sps: float, recent: Sequence[float | None], force: bool = False) -> None:
        now = time.perf_counter()
        if not self.enabled or (not force and now - self._last < self.interval):
            return
        self._last = now
        text = self.line(step, sps, recent)
        if self.tty:
            self.stream.write("\r" + text.ljust(100))
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self.enabled and self.tty:
            self.stream.write("\n")
            self.stream.flush()
