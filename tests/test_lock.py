"""One process per run directory (rlzoo.io.lock): a second process is refused with one line naming the
holder, and a lock left by a killed process is taken over."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rlzoo.io.lock import RunDirLocked, RunLock

HOLD = ("import sys, time\nfrom rlzoo.io.lock import RunLock\nlock = RunLock(sys.argv[1]); lock.acquire()\n"
        "print('held', flush=True)\ntime.sleep(120)\n")


def hold(run_dir: Path) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(run_dir)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_second_lock_in_one_process_is_refused_and_release_frees_it(tmp_path):
    with RunLock(tmp_path / "run"):
        with pytest.raises(RunDirLocked, match=f"pid {os.getpid()}"):
            RunLock(tmp_path / "run").acquire()
    with RunLock(tmp_path / "run"):  # released on exit
        pass


def test_a_running_holder_blocks_a_second_run_which_writes_nothing(tmp_path):
    run_dir = tmp_path / "run"
    holder = hold(run_dir)
    try:
        out = subprocess.run([sys.executable, "-m", "rlzoo", "total_steps=300", "learning_starts=100", "eval_every=0",
                              "progress=false", f"hydra.run.dir={run_dir}"], capture_output=True, text=True,
                             timeout=120)
    finally:
        holder.kill()
        holder.wait()
    err = out.stderr.strip().splitlines()
    assert out.returncode == 2, out.stderr
    assert len(err) == 1 and f"pid {holder.pid}" in err[0] and "in use by another rlzoo process" in err[0]
    assert not (run_dir / "returns.csv").exists() and not (run_dir / "checkpoint.pt").exists()


def test_a_lock_left_by_a_killed_process_is_taken_over(tmp_path):
    run_dir = tmp_path / "run"
    holder = hold(run_dir)
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    assert (run_dir / ".lock").exists()  # the file stays; the kernel dropped the lock with its holder
    out = subprocess.run([sys.executable, "-m", "rlzoo", "total_steps=300", "learning_starts=100", "eval_every=0",
                          "progress=false", f"hydra.run.dir={run_dir}"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert (run_dir / "returns.csv").stat().st_size > 0
    with RunLock(run_dir):  # and the finished run released it
        pass


def test_a_sweep_skips_the_job_another_instance_holds_and_runs_the_rest(tmp_path):
    sweep = tmp_path / "sweep"
    holder = hold(sweep / "job0")
    try:
        out = subprocess.run([sys.executable, "-m", "rlzoo", "-m", "seed=0,1", "total_steps=300", "learning_starts=100",
                              "eval_every=0", "progress=false", f"hydra.sweep.dir={sweep}",
                              "hydra.sweep.subdir=job${hydra.job.num}"], capture_output=True, text=True, timeout=240)
    finally:
        holder.kill()
        holder.wait()
    assert out.returncode == 0, out.stderr
    skipped = [line for line in out.stderr.splitlines() if "skipped" in line]
    assert len(skipped) == 1 and skipped[0].startswith("rlzoo: job 0 skipped:") and f"pid {holder.pid}" in skipped[0]
    assert not (sweep / "job0" / "returns.csv").exists()
    assert (sweep / "job1" / "returns.csv").stat().st_size > 0
