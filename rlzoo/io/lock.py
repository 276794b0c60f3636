"""One process per run directory: an exclusive lock on ``<run dir>/.lock``.

The lock is an ``fcntl.flock`` on the file, which the kernel releases when its holder exits, however it exits
(``kill -9`` included), so a lock left by a dead process is never stale: the next run simply takes it. The file
holds the holder's pid and start time, for the refusal message only. A second process that finds the lock held
(the same command started twice, a resume while the run still trains, two sweep instances over one
``hydra.sweep.dir``) stops before it writes anything.

``flock`` is reliable on local file systems; on NFS it depends on the mount (``local_lock``/``nolock``), which
docs/reliability.md mentions.
"""

from __future__ import annotations

import fcntl
import os
import time
from pathlib import Path

from rlzoo.errors import ConfigError

LOCK_NAME = ".lock"


class RunDirLocked(ConfigError):
    """Another live process holds the run directory's lock."""


class RunLock:
    """``with RunLock(run_dir): ...`` holds the directory's lock for the block (creating the directory)."""

    def __init__(self, run_dir: str | os.PathLike):
        self.path = Path(run_dir) / LOCK_NAME
        self._fd: int | None = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            raise RunDirLocked(f"{self.path.parent} is in use by another rlzoo process ({holder}): wait for it to "
                               f"finish or stop it, or choose another hydra.run.dir") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()}, started {time.strftime('%Y-%m-%d %H:%M:%S')}\n".encode())
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> "RunLock":
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def _read_holder(fd: int) -> str:
    try:
        text = os.pread(fd, 200, 0).decode(errors="replace").strip()
    except OSError:
        text = ""
    return text or "pid unknown"
