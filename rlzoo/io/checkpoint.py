"""Checkpoints: the complete state of a training run in one file, written atomically, read back without
executing code; resuming a run; stopping cleanly on SIGINT/SIGTERM.

``<run dir>/checkpoint.pt`` is a ``torch.save`` archive that holds only tensors, plain containers, numbers and
strings, and is read with ``torch.load(weights_only=True)``: a crafted pickle that would run code is refused.
numpy arrays travel as tensors (tagged ``__ndarray__``), numpy generators as their bit-generator state
(tagged ``__bitgen__``). It holds what the run's ``state_dict()`` returns (each part serialises itself: agent,
replay, environments, loop state, global generators), the config it was written with, and the byte length and
CRC of each CSV file at that step. This module knows no part's internals.
"""

from __future__ import annotations

import json
import math
import os
import pickle
import signal
import sys
import time
import zipfile
import zlib
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, read_write

from rlzoo.errors import ConfigError
from rlzoo.io.tables import TABLES

FILENAME = "checkpoint.pt"
FORMAT, VERSION = "rlzoo-checkpoint", 4  # 4: the run's own state_dict() under "run"
# Settings a resumed run may change; any other difference from the checkpointed config is refused.
RESUME_MAY_CHANGE = ("resume", "checkpoint_every", "progress", "device", "threads", "fast_path",
                     "nan_check", "tensorboard")
CSV_FILES = tuple(name for name, _ in TABLES.values())
_ND, _BITGEN, _ZLIB = "__ndarray__", "__bitgen__", "__zlib__"
COMPRESS_BYTES = 1 << 24  # uint8 tensors (frame stores) larger than this are zlib-compressed ...
CHUNK_BYTES = 1 << 24  # ... in chunks of 16 MiB


class CheckpointError(ConfigError):
    """A checkpoint or run directory that cannot be used as asked, with what to do instead."""


class RunStopped(Exception):
    """Training stopped on SIGINT/SIGTERM after writing a checkpoint; ``signum`` is the signal."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.signum = signum


# -- plain, safely loadable containers ---------------------------------------------------------------
def to_plain(x):
    """Replace numpy arrays, scalars and generators by values ``torch.load(weights_only=True)`` accepts."""
    if isinstance(x, np.ndarray):
        if x.dtype == object:
            return [to_plain(v) for v in x]
        return {_ND: torch.from_numpy(np.array(x, copy=True))}  # a copy: a view would save its whole base
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, np.random.Generator):
        return {_BITGEN: x.bit_generator.state}
    if isinstance(x, torch.Tensor):
        x = x.detach()
        if x.dtype == torch.uint8 and x.numel() > COMPRESS_BYTES:
            return _compress(x)
        return x.clone() if x.untyped_storage().nbytes() != x.numel() * x.element_size() else x
    if isinstance(x, dict):
        return {k: to_plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return type(x)(to_plain(v) for v in x)
    return x


def from_plain(x):
    if isinstance(x, dict):
        if set(x) == {_ND}:
            return x[_ND].numpy()
        if set(x) == {_BITGEN}:
            return generator_from_state(x[_BITGEN])
        if set(x) == {_ZLIB, "shape"}:
            return _decompress(x)
        return {k: from_plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return type(x)(from_plain(v) for v in x)
    return x


def _compress(x: torch.Tensor) -> dict:
    """Pixel replay memories are mostly background: zlib level 1 shrinks them many times at ~100s of MB/s."""
    flat = x.cpu().contiguous().view(-1).numpy()
    chunks = [zlib.compress(flat[i:i + CHUNK_BYTES].tobytes(), 1) for i in range(0, flat.size, CHUNK_BYTES)]
    return {_ZLIB: [torch.frombuffer(bytearray(c), dtype=torch.uint8) for c in chunks], "shape": list(x.shape)}


def _decompress(x: dict) -> torch.Tensor:
    out = np.empty(math.prod(x["shape"]), dtype=np.uint8)
    pos = 0
    for chunk in x[_ZLIB]:
        data = zlib.decompress(chunk.numpy().tobytes())
        out[pos:pos + len(data)] = np.frombuffer(data, dtype=np.uint8)
        pos += len(data)
    return torch.from_numpy(out).view(*x["shape"])


def generator_from_state(state: dict) -> np.random.Generator:
    rng = np.random.Generator(getattr(np.random, state["bit_generator"])())
    rng.bit_generator.state = state
    return rng


# -- CSV positions -------------------------------------------------------------------------------------
def _crc(path: Path, length: int) -> int:
    crc, left = 0, length
    with open(path, "rb") as f:
        while left > 0:
            chunk = f.read(min(left, 1 << 20))
            if not chunk:
                break
            crc, left = zlib.crc32(chunk, crc), left - len(chunk)
    return crc


def csv_positions(out_dir: Path) -> dict:
    """Byte length and CRC-32 of each CSV (rows are flushed as they are written)."""
    out = {}
    for name in CSV_FILES:
        path = out_dir / name
        size = path.stat().st_size if path.exists() else 0
        out[name] = {"bytes": size, "crc32": _crc(path, size) if size else 0}
    return out


def check_csvs(out_dir: Path, positions: dict, step: int) -> None:
    """Refuse to resume if a CSV lost or changed rows that the checkpoint counts as written."""
    for name, pos in positions.items():
        path = out_dir / name
        size = path.stat().st_size if path.exists() else 0
        if size < pos["bytes"]:
            raise CheckpointError(f"{path} has {size} bytes but held {pos['bytes']} at the checkpoint (step {step}): "
                                  "it was truncated or replaced, so resuming would lose rows; restore the file or "
                                  "start a new run in another directory")
        if pos["bytes"] and _crc(path, pos["bytes"]) != pos["crc32"]:
            raise CheckpointError(f"the first {pos['bytes']} bytes of {path} differ from what was written before the "
                                  f"checkpoint (step {step}): the file was edited; restore it or start a new run")


def truncate_csvs(out_dir: Path, positions: dict) -> int:
    """Cut each CSV back to its length at the checkpoint (rows written after it are written again).
    Returns the number of bytes removed."""
    removed = 0
    for name, pos in positions.items():
        path = out_dir / name
        if path.exists() and path.stat().st_size > pos["bytes"]:
            removed += path.stat().st_size - pos["bytes"]
            os.truncate(path, pos["bytes"])
    return removed


# -- the file --------------------------------------------------------------------------------------------
def write_atomic(payload: dict, path: Path) -> int:
    """``torch.save`` to a temporary file in the same directory, fsync, then rename over ``path``: a kill
    while writing leaves the previous checkpoint intact. Returns the size in bytes."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as f:
            torch.save(payload, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    try:
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:  # some filesystems cannot fsync a directory
        pass
    return path.stat().st_size


def read(path: str | os.PathLike) -> dict:
    """Load a checkpoint with ``torch.load(weights_only=True)``; errors are one sentence."""
    path = Path(path)
    if path.is_file() and not zipfile.is_zipfile(path):  # rlzoo writes torch's zip format; never unpickle anything else
        raise CheckpointError(f"{path} is not a readable checkpoint (not a PyTorch zip archive): it is truncated "
                              "or corrupted, or it is not an rlzoo checkpoint")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        if "weights only" in str(e).lower() or "weights_only" in str(e).lower():
            raise CheckpointError(f"{path} was refused: it holds Python objects other than tensors and plain data "
                                  "(a pickle that could run code), so it is not an rlzoo checkpoint") from None
        raise CheckpointError(f"{path} is not a readable checkpoint ({first}): it is corrupted") from None
    except Exception as e:  # truncated zip, random bytes, unreadable file
        first = str(e).strip().splitlines()[0][:160] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"{path} is not a readable checkpoint ({first}): it is truncated or corrupted; "
                              "start a new run in another directory") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not an rlzoo checkpoint")
    if payload.get("version") != VERSION:
        raise CheckpointError(f"{path} is a version {payload.get('version')} checkpoint; this rlzoo reads version {VERSION}")
    return payload


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        out.update(_flat(v, key + ".") if isinstance(v, dict) else {key: v})
    return out


def config_differences(saved: dict, current: dict) -> list[str]:
    a, b = _flat(saved), _flat(current)
    return sorted(k for k in a.keys() | b.keys()
                  if a.get(k) != b.get(k) and k.split(".")[0] not in RESUME_MAY_CHANGE)


def prepare(out_dir: str | os.PathLike, resume: bool, config: dict) -> dict | None:
    """Check the run directory before anything is written to it. Returns the checkpoint to resume from
    (``resume=True``) or None (a new run)."""
    out_dir = Path(out_dir)
    path = out_dir / FILENAME
    if not resume:
        if path.exists():
            raise CheckpointError(f"{out_dir} already holds a run with a checkpoint: add resume=true to continue it, "
                                  "or choose another hydra.run.dir")
        for name in CSV_FILES:
            if (out_dir / name).exists() and (out_dir / name).stat().st_size > 0:
                raise CheckpointError(f"{out_dir} already holds results ({name}) of another run: choose another "
                                      "hydra.run.dir (a run without a checkpoint cannot be continued)")
        return None
    if not path.exists():
        raise CheckpointError(f"resume=true but {out_dir} has no {FILENAME} (checkpoint_every=0, or the run stopped "
                              "before its first checkpoint): start a new run instead")
    return check_payload(read(path), out_dir, config)


def check_payload(payload: dict, out_dir: Path, config: dict) -> dict:
    """Refuse a checkpoint written with other settings, or whose CSV rows were lost or edited."""
    meta = json.loads(payload["meta"])
    check_config(meta, out_dir, config)
    check_csvs(out_dir, meta["csv"], payload["step"])
    return payload


def check_config(meta: dict, out_dir: Path, config: dict) -> None:
    """Refuse to resume with settings other than the checkpoint's (except ``RESUME_MAY_CHANGE``)."""
    diff = config_differences(meta["config"], config)
    if diff:
        shown = ", ".join(f"{k}={_flat(meta['config']).get(k)!r}" for k in diff[:6])
        raise CheckpointError(f"the checkpoint in {out_dir} was written with {shown}, which this command changes: "
                              f"repeat the run's original settings (overrides: {' '.join(meta.get('overrides', [])) or 'none'})"
                              f" and add hydra.run.dir={out_dir} resume=true")


# -- saving and restoring a run ---------------------------------------------------------------------------
class Checkpointer:
    """Called by the loop when ``state.step >= next_at``: every ``every`` steps, or at the end of the step
    in which SIGINT/SIGTERM arrived (then ``stop_requested`` tells the loop to stop)."""

    def __init__(self, out_dir, every: int, run, config: dict, overrides=()):
        self.out_dir = Path(out_dir)
        self.path = self.out_dir / FILENAME
        self.every = int(every)
        self.run, self.config, self.overrides = run, config, list(overrides)  # run: anything with state_dict()
        self.next_at = math.inf
        self.signum = None
        self.saved_step, self.seconds, self.bytes = None, 0.0, 0

    def schedule_after(self, step: int) -> None:
        self.next_at = (step // self.every + 1) * self.every if self.every else math.inf

    @property
    def stop_requested(self) -> bool:
        return self.signum is not None

    def save(self, state) -> None:
        """Write the run's ``state_dict()`` with the CSVs' lengths and checksums at this step."""
        t = time.perf_counter()
        meta = {"config": self.config, "overrides": self.overrides, "csv": csv_positions(self.out_dir),
                "clock": float(state.clock)}
        payload = {"format": FORMAT, "version": VERSION, "step": int(state.step), "meta": json.dumps(meta),
                   "run": to_plain(self.run.state_dict())}
        self.bytes = write_atomic(payload, self.path)
        self.saved_step, self.seconds = int(state.step), time.perf_counter() - t
        self.schedule_after(state.step)

    def _on_signal(self, signum, frame):
        if self.signum is not None:  # a second signal: stop now; the last checkpoint is intact
            print(f"rlzoo: stopped at once by a second {signal.Signals(signum).name}; the last checkpoint "
                  f"(step {self.saved_step}) is intact", file=sys.stderr)
            raise SystemExit(128 + signum)
        self.request_stop(signum)

    def request_stop(self, signum: int) -> None:
        """Checkpoint at the end of the current step and stop, as on ``signum``."""
        self.signum = signum
        self.next_at = 0

    @contextmanager
    def signals(self, which=(signal.SIGINT, signal.SIGTERM)):
        """While training: SIGINT and SIGTERM finish the current step, checkpoint and stop."""
        previous = {}
        try:
            for sig in which:
                previous[sig] = signal.signal(sig, self._on_signal)
        except ValueError:  # not the main thread: leave signals alone
            pass
        try:
            yield self
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


def restore(run, payload: dict, out_dir) -> None:
    """Load a checkpoint into a freshly built run (``run.load_state_dict``) and cut the CSVs back to the
    checkpoint: rows written after it are written again."""
    out_dir = Path(out_dir)
    try:
        run.load_state_dict(from_plain(payload["run"]))
    except (KeyError, TypeError, ValueError, RuntimeError, IndexError, AttributeError) as e:
        raise CheckpointError(f"the checkpoint in {out_dir} does not fit this run ({type(e).__name__}: "
                              f"{str(e).splitlines()[0][:160] if str(e) else ''}): start a new run instead") from None
    truncate_csvs(out_dir, json.loads(payload["meta"])["csv"])


# -- the run directory, before Hydra writes to it ------------------------------------------------------------
def _writable_or_exit(directory: Path) -> None:
    try:
        directory.mkdir(parents=True, exist_ok=True)
        probe = directory / f".rlzoo-write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        print(f"rlzoo: error: cannot write to the output directory {directory} ({e.strerror or e}): choose a "
              "writable one with hydra.run.dir=<dir> (or hydra.sweep.dir=<dir> with -m)", file=sys.stderr)
        sys.exit(2)


class RunDirGuard(Callback):
    """Hydra callback (``hydra.callbacks`` in conf/config.yaml), called before Hydra writes anything:
    an output directory that cannot be written ends with one sentence instead of a traceback, and a launch
    into a directory that already holds a run (``resume=true``, or a refused attempt) writes its Hydra files
    to ``.hydra/launch-<time>/`` instead of overwriting the run's own ``.hydra/*.yaml``."""

    def on_run_start(self, config: DictConfig, **kwargs) -> None:
        out = Path(str(config.hydra.run.dir))
        _writable_or_exit(out)
        sub = config.hydra.output_subdir
        if sub is not None and (out / str(sub) / "config.yaml").exists():
            with read_write(config.hydra):
                config.hydra.output_subdir = f"{sub}/launch-{time.strftime('%Y-%m-%d_%H-%M-%S')}"

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        _writable_or_exit(Path(str(config.hydra.sweep.dir)))
