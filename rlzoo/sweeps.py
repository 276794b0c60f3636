"""Resumable sweeps: what a job of a sweep (``python -m rlzoo -m ...``) does when its directory already holds
a run, so that running the same sweep command again into the same sweep directory finishes the sweep.

A job's directory (``<hydra.sweep.dir>/<hydra.sweep.subdir>``) is in one of four states:

- **empty** (no ``checkpoint.pt``, no CSV rows): the job starts.
- **complete**: ``checkpoint.pt`` is at step ``total_steps`` and each CSV is exactly as long as the checkpoint
  recorded, with the same CRC-32 (the final checkpoint is written after the last row). The job is skipped.
- **checkpointed**: ``checkpoint.pt`` is at an earlier step (or CSV rows were written after the final one):
  the job resumes from it (``resume=true``), losing only the steps since that checkpoint.
- **results without a checkpoint**: the run was killed before its first checkpoint. With ``checkpoint_every > 0``
  a complete run would have one, so these rows are an unfinished attempt: they are deleted and the job starts.
  With ``checkpoint_every=0`` completeness cannot be told: the job stops with an error that says what to do.

A checkpoint of other members, another environment or device type, or written with other settings (except
those a resumed run may change, ``checkpoint.RESUME_MAY_CHANGE``) stops the job with the checkpoint's error, as ``resume=true`` does: a sweep
directory is never silently filled with runs of two configurations.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch

from rlzoo.io import checkpoint

log = logging.getLogger("rlzoo")

START, RESUME, COMPLETE = "start", "resume", "complete"


def _header(path: Path) -> dict:
    """The checkpoint's ``format``, ``version``, ``step`` and ``meta`` without reading its tensors into memory
    (a memory-mapped, weights-only load); a file that does not load this way gets ``checkpoint.read``'s error."""
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        ok = isinstance(payload, dict) and payload.get("format") == checkpoint.FORMAT and \
            payload.get("version") in checkpoint.READS
    except Exception:  # noqa: BLE001 - read() says why, in one sentence
        ok = False
    if not ok:
        payload = checkpoint.read(path)
    return {k: payload[k] for k in ("step", "meta")}


def csvs_match(out_dir: Path, positions: dict) -> bool:
    """True when every CSV is exactly as long as at the checkpoint and has the bytes it had then."""
    for name, pos in positions.items():
        path = out_dir / name
        size = path.stat().st_size if path.exists() else 0
        if size != pos["bytes"] or (size and checkpoint._crc(path, size) != pos["crc32"]):
            return False
    return True


def job_state(out_dir: str | Path, config: dict) -> str:
    """``START``, ``RESUME`` or ``COMPLETE`` for the job about to run in ``out_dir`` with the resolved ``config``
    (see the module's docstring). Partial CSVs of an attempt that never checkpointed are deleted here."""
    out_dir = Path(out_dir)
    path = out_dir / checkpoint.FILENAME
    if path.exists():
        head = _header(path)
        meta = json.loads(head["meta"])
        checkpoint.check_identity(meta, out_dir, checkpoint.identity(config))  # other members, env or device
        checkpoint.check_config(meta, out_dir, config)  # another configuration: its one-sentence error
        if int(head["step"]) >= int(config["total_steps"]) and csvs_match(out_dir, meta["csv"]):
            return COMPLETE
        return RESUME
    partial = [out_dir / n for n in checkpoint.CSV_FILES if (out_dir / n).exists() and (out_dir / n).stat().st_size]
    if partial:
        if not config.get("checkpoint_every"):
            raise checkpoint.CheckpointError(
                f"{out_dir} holds results but no checkpoint and checkpoint_every=0, so whether that run is complete "
                "cannot be told: move the directory away to run the job again, or give another hydra.sweep.dir")
        for p in partial:
            p.unlink()
        log.warning("%s: deleted the rows of an attempt stopped before its first checkpoint (%s); starting again",
                    out_dir, ", ".join(p.name for p in partial))
    return START
