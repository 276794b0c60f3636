"""Tidy CSV output: every row carries the columns that identify its run (agent, env, seed).

Files are opened in append mode and flushed after every row, so a killed run leaves valid files whose
rows are all complete. Appending to an existing file follows that file's own header (a run resumed from an
older rlzoo keeps its columns).

``protocol`` (returns.csv) is empty for the rows a training run writes; rows that ``python -m rlzoo.evaluate``
appends (``phase=evaluate``) say how they were played, e.g. ``model=final episodes=100 epsilon=0 seed=1000``.

With ``tensorboard=True`` the same scalars also go to TensorBoard event files, one directory per member
(``<run dir>/tensorboard/seed<seed>/``), never instead of the CSVs: ``train/return``, ``train/length``, ... from
returns.csv (``<phase>/<column>``) and ``metrics/loss``, ``metrics/epsilon``, ... from metrics.csv, against
the step.
"""

from __future__ import annotations

import contextlib
import csv
import os
from pathlib import Path
from typing import Any, Sequence

RETURNS_COLUMNS = ("agent", "env", "seed", "phase", "step", "episode", "return", "length", "truncated",
                   "q_estimate", "mc_return", "time", "protocol")
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
        if not new:
            header = read_header(self.path)
            if header:
                self.columns = header
        self._file = open(self.path, "a", newline="", encoding="utf-8")
        self._writer = csv.writer(self._file)
        if new:
            self.write(dict(zip(self.columns, self.columns)))

    def write(self, row: dict[str, Any], flush: bool = True) -> None:
        with self._naming_errors():
            self._writer.writerow([_fmt(row.get(c)) for c in self.columns])
            if flush:
                self._file.flush()

    def flush(self) -> None:
        with self._naming_errors():
            self._file.flush()

    def close(self) -> None:
        if not self._file.closed:
            with self._naming_errors():
                self._file.close()

    @contextlib.contextmanager
    def _naming_errors(self):
        """An OSError of a write (a full disk: ENOSPC) carries no file name: give it this file's."""
        try:
            yield
        except OSError as e:
            if e.filename is None:
                e.filename = str(self.path)
            raise


def read_header(path: str | os.PathLike) -> tuple[str, ...]:
    """The column names in the first line of a CSV file (() if it has none)."""
    with open(path, newline="", encoding="utf-8") as f:
        first = next(csv.reader(f), [])
    return tuple(first)


def open_table(out_dir: str | os.PathLike, kind: str) -> CsvWriter:
    """The writer of ``kind``'s CSV (``TABLES``) in ``out_dir``."""
    name, columns = TABLES[kind]
    return CsvWriter(Path(out_dir) / name, columns)


class RunLogger:
    """Writes ``returns.csv`` (one row per finished episode, train or eval) and ``metrics.csv``
    (periodic per-member training metrics) into ``out_dir``; every row starts with the columns that
    identify its run (agent, env, seed)."""

    def __init__(self, out_dir: str | os.PathLike, agent: str, env: str, seeds: Sequence[int],
                 tensorboard: bool = False):
        self.out_dir = Path(out_dir)
        self.agent, self.env, self.seeds = agent, env, list(seeds)
        self._writers = {kind: open_table(self.out_dir, kind) for kind in TABLES}
        self.tensorboard = TensorBoardWriter(self.out_dir / "tensorboard", self.seeds) if tensorboard else None

    def _id(self, member: int) -> dict[str, Any]:
        return {"agent": self.agent, "env": self.env, "seed": self.seeds[member]}

    def episode(self, member: int, **row: Any) -> None:
        self._writers["returns"].write({**self._id(member), **row})
        if self.tensorboard is not None:
            self.tensorboard.row(member, str(row.get("phase", "train")), row, RETURNS_SCALARS)

    def metric(self, member: int, **row: Any) -> None:
        self._writers["metrics"].write({**self._id(member), **row})
        if self.tensorboard is not None:
            self.tensorboard.row(member, "metrics", row, METRICS_SCALARS)

    def close(self) -> None:
        for writer in self._writers.values():
            writer.close()
        if self.tensorboard is not None:
            self.tensorboard.close()


RETURNS_SCALARS = ("return", "length", "truncated", "q_estimate", "mc_return")
METRICS_SCALARS = ("updates", "loss", "q_mean", "grad_norm", "epsilon", "sps")


class TensorBoardWriter:
    """One ``SummaryWriter`` per member (``<dir>/seed<seed>/``), so TensorBoard overlays the members' curves.
    ``row`` writes each numeric, finite value of ``columns`` as ``<prefix>/<column>`` at the row's step."""

    def __init__(self, directory: Path, seeds: Sequence[int]):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            from rlzoo.errors import ConfigError
            raise ConfigError("tensorboard=true needs the tensorboard package: pip install tensorboard "
                              "(or pip install -e '.[tensorboard]'), or set tensorboard=false") from None
        self.writers = [SummaryWriter(log_dir=str(Path(directory) / f"seed{s}")) for s in seeds]

    def row(self, member: int, prefix: str, row: dict, columns: Sequence[str]) -> None:
        step, writer = int(row["step"]), self.writers[member]
        for c in columns:
            v = row.get(c)
            if isinstance(v, (int, float)) and not isinstance(v, bool) and v == v and abs(v) != float("inf"):
                writer.add_scalar(f"{prefix}/{c}", float(v), step)

    def close(self) -> None:
        for w in self.writers:
            w.close()
