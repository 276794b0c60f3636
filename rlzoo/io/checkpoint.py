"""Checkpoints: the complete state of a training run in one file, written atomically, read back without
executing code; resuming a run; stopping cleanly on SIGINT/SIGTERM.

``<run dir>/checkpoint.pt`` is a ``torch.save`` archive that holds only tensors, plain containers, numbers and
strings, and is read with ``torch.load(weights_only=True)``: a crafted pickle that would run code is refused.
numpy arrays travel as tensors (tagged ``__ndarray__``), numpy generators as their bit-generator state
(tagged ``__bitgen__``). It holds what the run's ``state_dict()`` returns (each part serialises itself: agent,
replay, environments, loop state, global generators), the config it was written with, the run's identity
(agent, environment, member seeds, device type) and the byte length and CRC of each CSV file at that step.

Loading checks, each with a one-line ``CheckpointError`` that names what differs: the identity and the config
against the run that loads it (``RESUME_MAY_CHANGE`` may differ), the CSVs' bytes, the loop state's counters
against the CSV rows up to the checkpoint, and the shape and dtype of every saved array against the live
part's ``state_dict()`` (``check_fits``; generic: it walks the two state dicts together). This module knows no
part's internals beyond the loop state's counters (``step``, ``episodes``, ``eval_episodes``).
"""

from __future__ import annotations

import csv
import io
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
from rlzoo.io.rundir import env_name
from rlzoo.io.tables import TABLES
from rlzoo.seeding import member_seeds

FILENAME = "checkpoint.pt"
FORMAT, VERSION = "rlzoo-checkpoint", 5  # 5: an identity block; replay memories hold their filled part
READS = (4, 5)  # 4: the run's own state_dict() under "run", no identity block, whole replay allocations
# Settings a resumed run may change, each tested not to change a run's numbers bit for bit
# (tests/test_hostile_checkpoint.py); any other difference from the checkpointed config is refused. ``device``
# may change its spelling (auto, cpu, cuda:1) but not the device type: that is in the identity.
RESUME_MAY_CHANGE = ("resume", "checkpoint_every", "progress", "device", "nan_check", "tensorboard")
CSV_FILES = tuple(name for name, _ in TABLES.values())
_ND, _BITGEN, _ZLIB = "__ndarray__", "__bitgen__", "__zlib__"
COMPRESS_BYTES = 1 << 20  # uint8 tensors (frame and pixel stores) larger than this are zlib-compressed ...
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
    except BaseException as e:
        tmp.unlink(missing_ok=True)
        if isinstance(e, OSError) and e.filename is None:  # a full disk: name the file (rlzoo.train says what to do)
            e.filename = str(path)
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
    if payload.get("version") not in READS:
        raise CheckpointError(f"{path} is a version {payload.get('version')} checkpoint; this rlzoo reads versions "
                              f"{', '.join(map(str, READS))}")
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


def device_type(name) -> str:
    """``cpu`` or ``cuda``: the kind of device a ``device`` setting trains on here (``auto``: cuda if PyTorch sees
    a GPU). The type is part of a run's identity: the kernels, and so the numbers, differ between the two."""
    name = str(name)
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return name.split(":")[0]


def identity(config: dict, agent: str | None = None) -> dict:
    """Which run and members a checkpoint belongs to: the agent (its config group choice; None: unknown, not
    checked), the environment id, the member seeds and the device type."""
    return {"agent": agent, "env": env_name(config.get("env") or {}),
            "seeds": member_seeds(config["seed"], config["n_seeds"]), "device": device_type(config.get("device", "cpu"))}


def check_identity(meta: dict, out_dir: Path, current: dict) -> None:
    """Refuse a checkpoint of another agent, environment, set of members or device type, naming what differs."""
    saved = meta.get("identity")
    if not saved:  # a version-4 checkpoint: its config is checked instead
        return
    what = {"seeds": "seeds", "agent": "agent", "env": "environment", "device": "device type"}
    for key in ("seeds", "agent", "env", "device"):
        if current.get(key) is None or saved.get(key) is None or saved[key] == current[key]:
            continue
        hint = {"seeds": (f"use seed={saved[key][0]} n_seeds={len(saved[key])}" if isinstance(saved[key], list)
                          and saved[key] else "use the run's seed and n_seeds"), "agent": f"use agent={saved[key]}",
                "env": "use the run's env", "device": f"resume on a {saved[key]} device (device={saved[key]})"}[key]
        raise CheckpointError(f"the checkpoint in {out_dir} is for {what[key]} {saved[key]}, this run has "
                              f"{current[key]}: {hint} (overrides: "
                              f"{' '.join(meta.get('overrides', [])) or 'none'}), or choose another hydra.run.dir")


def prepare(out_dir: str | os.PathLike, resume: bool, config: dict, agent: str | None = None) -> dict | None:
    """Check the run directory before anything is written to it. Returns the checkpoint to resume from
    (``resume=True``) or None (a new run). ``agent``: the agent's name, checked against the checkpoint's."""
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
    return check_payload(read(path), out_dir, config, agent)


def check_payload(payload: dict, out_dir: Path, config: dict, agent: str | None = None) -> dict:
    """Refuse a checkpoint of another run or written with other settings, whose CSV rows were lost or edited,
    or whose loop counters disagree with the CSV rows."""
    try:
        meta = json.loads(payload["meta"])
        current = identity(config, agent)
        check_identity(meta, out_dir, current)
        check_config(meta, out_dir, config)
        check_csvs(out_dir, meta["csv"], payload["step"])
        loop = payload.get("run", {}).get("loop") if isinstance(payload.get("run"), dict) else None
        check_counters(out_dir, meta["csv"], from_plain(loop) if loop else None, int(payload["step"]),
                       (meta.get("identity") or current)["seeds"])
    except CheckpointError:
        raise
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as e:  # a header edited by hand
        raise CheckpointError(f"the checkpoint in {out_dir} has a malformed header ({type(e).__name__}: "
                              f"{str(e).splitlines()[0][:120] if str(e) else ''}): it was edited or is not an rlzoo "
                              "checkpoint; start a new run in another directory") from None
    return payload


def _csv_rows(path: Path, length: int) -> list[dict]:
    """The rows in the first ``length`` bytes of a CSV (its header first)."""
    with open(path, "rb") as f:
        text = f.read(length).decode("utf-8", errors="replace")
    return list(csv.DictReader(io.StringIO(text, newline="")))


def check_counters(out_dir: Path, positions: dict, loop: dict | None, step: int, seeds) -> None:
    """Refuse a checkpoint whose loop state does not continue the CSV rows up to its recorded position: per
    member, the training and evaluation episodes counted by the loop must be the rows of ``returns.csv`` (each
    numbered 1, 2, ... in order), and no row of either CSV may lie after the checkpoint's step or belong to
    another seed."""
    seeds = [int(x) for x in seeds]
    counts = {}
    for name, pos in positions.items():
        path = out_dir / name
        if not pos.get("bytes") or not path.exists():
            continue
        for n, row in enumerate(_csv_rows(path, pos["bytes"]), start=2):
            try:
                seed, row_step = int(row["seed"]), int(row["step"])
            except (KeyError, TypeError, ValueError):
                raise CheckpointError(f"{path} line {n} is not a row rlzoo wrote (seed={row.get('seed')!r}, "
                                      f"step={row.get('step')!r}): restore the file or start a new run in another "
                                      "directory") from None
            if seed not in seeds:
                raise CheckpointError(f"{path} line {n} is a row of seed {seed}, but the checkpoint's members are seeds "
                                      f"{seeds}: these CSVs belong to another run; start a new run in another directory")
            if row_step > step:
                raise CheckpointError(f"{path} line {n} is at step {row_step}, after the checkpoint's step {step}, yet "
                                      "within the bytes it counts as written: the checkpoint does not belong to these "
                                      "CSVs; start a new run in another directory")
            if "phase" in row and row["phase"] in ("train", "eval"):
                key = (row["phase"], seed)
                counts[key] = counts.get(key, 0) + 1
                if str(row.get("episode")) != str(counts[key]):
                    raise CheckpointError(f"{path} line {n} is {row['phase']} episode {row.get('episode')} of seed "
                                          f"{seed}, expected episode {counts[key]}: rows were lost or repeated before "
                                          f"the checkpoint (step {step}); start a new run in another directory")
    if loop is None:
        return
    if int(loop.get("step", step)) != int(step):
        raise CheckpointError(f"the checkpoint in {out_dir} is labelled step {step} but its loop state is at step "
                              f"{int(loop['step'])}: it was edited; start a new run in another directory")
    for phase, key in (("train", "episodes"), ("eval", "eval_episodes")):
        counted = loop.get(key)
        if counted is None:
            continue
        counted = [int(x) for x in np.asarray(counted).reshape(-1)]
        if len(counted) != len(seeds):
            raise CheckpointError(f"the checkpoint in {out_dir} counts {phase} episodes for {len(counted)} members "
                                  f"but is for seeds {seeds}: it was edited; start a new run in another directory")
        for seed, c in zip(seeds, counted):
            rows = counts.get((phase, seed), 0)
            if rows != c:
                raise CheckpointError(
                    f"the checkpoint in {out_dir} (step {step}) counts {c} {phase} episodes of seed {seed} but "
                    f"returns.csv holds {rows} up to it: the checkpoint and the CSVs are of different runs or "
                    "were edited; start a new run in another directory")


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

    def __init__(self, out_dir, every: int, run, config: dict, overrides=(), agent: str | None = None):
        self.out_dir = Path(out_dir)
        self.path = self.out_dir / FILENAME
        self.every = int(every)
        self.run, self.config, self.overrides = run, config, list(overrides)  # run: anything with state_dict()
        self.identity = identity(config, agent)
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
        meta = {"config": self.config, "identity": self.identity, "overrides": self.overrides,
                "csv": csv_positions(self.out_dir), "clock": float(state.clock)}
        payload = {"format": FORMAT, "version": VERSION, "step": int(state.step), "meta": json.dumps(meta),
                   "run": to_plain(self.run.state_dict())}
        self.bytes = write_atomic(payload, self.path)
        self.saved_step, self.seconds = int(state.step), time.perf_counter() - t
        self.schedule_after(state.step)

    def finish(self, state) -> None:
        """At the end of training: write the final state unless the checkpoint already holds it, whenever the
        run has a checkpoint (``checkpoint_every > 0``, or a resumed run, whatever its ``checkpoint_every``
        now), so that the checkpoint on disk always matches the CSVs at the end of a run."""
        if (self.every or self.path.exists()) and self.saved_step != state.step:
            self.save(state)

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
        saved = from_plain(payload["run"])
        problem = check_fits(saved, run)
        if problem is None:
            run.load_state_dict(saved)
            problem = check_optimizers(run, saved)
    except (KeyError, TypeError, ValueError, RuntimeError, IndexError, AttributeError) as e:
        problem = f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"
    if problem is not None:
        raise CheckpointError(f"the checkpoint in {out_dir} does not fit this run: {problem}; start a new run "
                              "in another directory")
    truncate_csvs(out_dir, json.loads(payload["meta"])["csv"])


def _is_array(x) -> bool:
    return isinstance(x, (np.ndarray, torch.Tensor))


def _dtype(x) -> str:
    return str(x.dtype).removeprefix("torch.") if isinstance(x, torch.Tensor) else x.dtype.name


def _fits(saved, live, path: str) -> str | None:
    """Where ``saved`` does not fit ``live`` (two state dicts walked together): the first difference in one
    sentence, or None. Arrays (numpy or torch) must have the same dtype and shape; an axis of length 0 in the
    live array is a filled-part axis (a replay memory saves the slots it filled: any length, which the part's
    own ``load_state_dict`` checks). Dicts are compared on the live one's keys (every one must be saved) unless
    it is empty (state created by use, e.g. an optimizer's moments before its first step); lists entry by entry,
    and must be as long."""
    if _is_array(live):
        if not _is_array(saved):
            return f"{path} is {type(saved).__name__} in the checkpoint, this run's is an array"
        shape, want = list(saved.shape), list(live.shape)
        if _dtype(saved) != _dtype(live) or len(shape) != len(want) or \
                any(w != 0 and s != w for s, w in zip(shape, want)):
            fill = "[" + ", ".join("any" if w == 0 else str(w) for w in want) + "]"
            return (f"{path} has shape {shape} ({_dtype(saved)}) in the checkpoint, this run's has shape {fill} "
                    f"({_dtype(live)})")
        return None
    if _is_array(saved):
        return f"{path} is an array in the checkpoint, this run's is {type(live).__name__}"
    if isinstance(live, dict):
        if not isinstance(saved, dict):
            return f"{path} is {type(saved).__name__} in the checkpoint, this run's is a dict"
        if not live:
            return None
        missing = [k for k in live if k not in saved]
        if missing:
            return f"the checkpoint has no {path}{'.' if path else ''}{missing[0]}, which this run has"
        for k in live:  # keys only the checkpoint has are the part's to judge (e.g. an environment's attributes
            # that appear at its first reset; torch modules refuse unexpected keys)
            problem = _fits(saved[k], live[k], f"{path}.{k}" if path else str(k))
            if problem:
                return problem
        return None
    if isinstance(live, (list, tuple)):
        if not isinstance(saved, (list, tuple)):
            return f"{path} is {type(saved).__name__} in the checkpoint, this run's is a list"
        if len(saved) != len(live):
            return f"{path} has {len(saved)} entries in the checkpoint, this run's has {len(live)}"
        for i, (a, b) in enumerate(zip(saved, live)):
            problem = _fits(a, b, f"{path}.{i}")
            if problem:
                return problem
    return None


def check_fits(saved: dict, run) -> str | None:
    """Check the saved state of each part of ``run`` that can serialise itself now (``run.<name>.state_dict()``
    for each ``<name>`` in the checkpoint: agent, replay, environments) against the live one, before anything
    is loaded: no saved array is broadcast, cast or cut into a part of another shape. Returns the first
    difference, or None."""
    for name, part_state in saved.items():
        part = getattr(run, name, None)
        if part is None or not callable(getattr(part, "state_dict", None)):
            continue
        problem = _fits(part_state, part.state_dict(), name)
        if problem:
            return problem
    return None


def check_optimizers(run, saved: dict) -> str | None:
    """After loading: the per-parameter state of every optimizer held by a part of ``run`` (an attribute that
    is a ``torch.optim.Optimizer``) has its parameter's shape and dtype. A fresh optimizer has no state to
    compare before loading, and PyTorch's ``load_state_dict`` does not check it."""
    for name in saved:
        part = getattr(run, name, None)
        for attr, opt in (vars(part).items() if hasattr(part, "__dict__") else ()):
            if not isinstance(opt, torch.optim.Optimizer):
                continue
            params = [p for group in opt.param_groups for p in group["params"]]
            mine = saved[name].get(attr) if isinstance(saved[name], dict) else None  # as saved: loading casts dtypes
            mine = mine.get("state") if isinstance(mine, dict) and "param_groups" in mine else None
            for index, p in enumerate(params):
                state = mine.get(index, {}) if isinstance(mine, dict) else opt.state.get(p, {})
                for key, value in state.items():
                    if isinstance(value, torch.Tensor) and value.dim() > 0 and \
                            (value.shape != p.shape or value.dtype != p.dtype):
                        return (f"{name}.{attr}.state.{index}.{key} has shape {list(value.shape)} "
                                f"({_dtype(value)}) in the checkpoint, its parameter has shape {list(p.shape)} "
                                f"({_dtype(p)})")
    return None


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
