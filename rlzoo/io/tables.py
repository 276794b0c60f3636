"""Tidy CSV output: every row carries the columns that identify its run (agent, env, seed).

Files are opened in append mode and flushed after every row, so a killed run leaves valid files whose
rows are all complete.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Any, Sequence

RETURNS_COLUMNS = ("agent", "env", "seed", "phase", "step", "episode", "return", "length", "truncated",
                   "q_estimate", "mc_return", "time")
METRICS_COLUMNS = ("agent", "env", "seed", "step", "updates", "loss", "q_mean", "grad_norm", "epsilon", "sps", "time")
TABLES = {"returns": ("returns.csv", RETURNS_COLUMNS), "metrics": ("metrics.csv", METRICS_COLUMNS)}  # kind: file, columns


def _fmt(value: Any) -> Any:
    if isinstance(value, float):
        return repr(value) if value == value else ""  # full precision; NaN -> empty
    return "" if value is None else value


class CsvWriter:
    """Append rows with a fixed header; writes the header only when the file is new or empty."""

    def __init__(self, path: str | os.PathLike, columns: Sequence[str]):
        self.path = Path(path)
        self.columns = tuple(columns)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        new = not self.path.exists() or self.path.stat().st_size == 0
        self._file = open(self.path, "a", newline="", encoding="utf-8")
        self._writer = csv.writer(self._file)
        if new:
            self._writer.writerow(self.columns)
            self._file.flush()

    def write(self, row: dict[str, Any], flush: bool = True) -> None:
        self._writer.writerow([_fmt(row.get(c)) for c in self.columns])
        if flush:
            self._file.flush()

    def flush(self) -> None:
        self._file.flush()

    def close(self) -> None:
        if not self._file.closed:
            self._file.close()


def open_table(out_dir: str | os.PathLike, kind: str) -> CsvWriter:
    """The writer of ``kind``'s CSV (``TABLES``) in ``out_dir``."""
    name, columns = TABLES[kind]
    return CsvWriter(Path(out_dir) / name, columns)


class RunLogger:
    """Writes ``returns.csv`` (one row per finished episode, train or eval) and ``metrics.csv``
    (periodic per-member training metrics) into ``out_dir``; every row starts with the columns that
    identify its run (agent, env, seed)."""

    def __init__(self, out_dir: str | os.PathLike, agent: str, env: str, seeds: Sequence[int]):
        self.out_dir = Path(out_dir)
        self.agent, self.env, self.seeds = agent, env, list(seeds)
        self._writers = {kind: open_table(self.out_dir, kind) for kind in TABLES}

    def _id(self, member: int) -> dict[str, Any]:
        return {"agent": self.agent, "env": self.env, "seed": self.seeds[member]}

    def episode(self, member: int, **row: Any) -> None:
        self._writers["returns"].write({**self._id(member), **row})

    def metric(self, member: int, **row: Any) -> None:
        self._writers["metrics"].write({**self._id(member), **row})

    def close(self) -> None:
        for writer in self._writers.values():
            writer.close()
