"""Resumable sweeps: running the same sweep command again into the same ``hydra.sweep.dir`` skips complete jobs,
resumes checkpointed ones and starts the rest, and the sweep ends with the CSVs of a sweep never interrupted."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from rlzoo import sweeps
from rlzoo.io import checkpoint
from rlzoo.train import train
from conftest import make_cfg, read_rows

JOB = ["total_steps=2000", "learning_starts=200", "eval_every=500", "eval_episodes=2", "log_every=250",
       "checkpoint_every=400", "buffer_size=2000", "progress=false"]
SWEEP = [sys.executable, "-m", "rlzoo", "-m", "seed=0,1,2", *JOB]


def job_dirs(sweep_dir: Path) -> dict[int, Path]:
    """Job number -> its directory (``<num>_<overrides>``)."""
    return {int(p.name.split("_")[0]): p for p in sweep_dir.iterdir() if p.is_dir() and p.name[0].isdigit()}


def ckpt_step(run_dir: Path) -> int | None:
    path = run_dir / checkpoint.FILENAME
    return checkpoint.read(path)["step"] if path.exists() else None


def test_a_killed_sweep_rerun_skips_complete_jobs_resumes_the_rest_and_equals_a_straight_sweep(tmp_path):
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    done = subprocess.run([*SWEEP, f"hydra.sweep.dir={straight}"], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]

    # The same sweep, killed hard (SIGKILL: no checkpoint at the kill) once job 1 has written a checkpoint.
    proc = subprocess.Popen([*SWEEP, f"hydra.sweep.dir={killed}"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and proc.poll() is None:
        jobs = job_dirs(killed) if killed.exists() else {}
        if 1 in jobs and (jobs[1] / checkpoint.FILENAME).exists():
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    jobs = job_dirs(killed)
    assert ckpt_step(jobs[0]) == 2000 and 400 <= ckpt_step(jobs[1]) < 2000 and 2 not in jobs
    first = {name: (jobs[0] / name).stat().st_mtime_ns for name in ("returns.csv", "metrics.csv", "checkpoint.pt")}

    rerun = subprocess.run([*SWEEP, f"hydra.sweep.dir={killed}"], capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    jobs = job_dirs(killed)
    # Job 0 was complete: not run again (its files untouched); job 1 resumed from its checkpoint; job 2 started.
    assert {name: (jobs[0] / name).stat().st_mtime_ns for name in first} == first
    assert "skipped:" in (jobs[0] / "train.log").read_text()
    log1 = (jobs[1] / "train.log").read_text()
    assert "resumed" in log1 and log1.count("training dqn") == 2
    assert "resumed" not in (jobs[2] / "train.log").read_text()
    for num, run_dir in job_dirs(straight).items():
        assert jobs[num].name == run_dir.name
        for name in ("returns.csv", "metrics.csv"):
            rows = read_rows(run_dir / name)
            assert len(rows) > 5 and read_rows(jobs[num] / name) == rows, (num, name)
        assert ckpt_step(jobs[num]) == 2000


def config_of(*overrides):
    return OmegaConf.to_container(make_cfg(*overrides), resolve=True)


def test_job_state_judges_complete_checkpointed_and_partial_runs(tmp_path, monkeypatch):
    args = ["total_steps=600", "learning_starts=100", "eval_every=300", "eval_episodes=1", "log_every=100",
            "checkpoint_every=200", "buffer_size=500", "progress=false"]
    config = config_of(*args)
    assert sweeps.job_state(tmp_path / "new", config) == sweeps.START
    run_dir = tmp_path / "run"
    train(make_cfg(*args), run_dir, "dqn")
    assert sweeps.job_state(run_dir, config) == sweeps.COMPLETE
    # Another configuration in the job's directory is refused, as resume=true refuses it.
    with pytest.raises(checkpoint.CheckpointError, match="lr=0.0005"):
        sweeps.job_state(run_dir, config_of(*args, "lr=0.001"))
    # A setting a resumed run may change (nan_check) does not make a complete run incomplete; threads may not.
    assert sweeps.job_state(run_dir, config_of(*args, "nan_check=false")) == sweeps.COMPLETE
    with pytest.raises(checkpoint.CheckpointError, match="threads=1"):
        sweeps.job_state(run_dir, config_of(*args, "threads=2"))
    # Rows written after the final checkpoint: not complete, resume (which cuts them off).
    with open(run_dir / "returns.csv", "a") as f:
        f.write("dqn,CartPole-v1,0,train,601,99,1.0,1,False,,,0.1\n")
    assert sweeps.job_state(run_dir, config) == sweeps.RESUME
    # The same job with a larger total_steps is another configuration (the exploration schedule depends on it).
    with pytest.raises(checkpoint.CheckpointError, match="total_steps=600"):
        sweeps.job_state(run_dir, config_of(*[a for a in args if not a.startswith("total_steps")], "total_steps=900"))

    # Results without a checkpoint: an attempt killed before its first checkpoint is started again ...
    partial = tmp_path / "partial"
    partial.mkdir()
    (partial / "returns.csv").write_text("agent,env\n")
    (partial / "metrics.csv").write_text("")
    assert sweeps.job_state(partial, config) == sweeps.START
    assert not (partial / "returns.csv").exists() and (partial / "metrics.csv").exists()
    # ... unless checkpoint_every=0, where a complete run has no checkpoint either.
    (partial / "returns.csv").write_text("agent,env\n")
    with pytest.raises(checkpoint.CheckpointError, match="checkpoint_every=0"):
        sweeps.job_state(partial, config_of(*args, "checkpoint_every=0"))
    assert (partial / "returns.csv").exists()


def test_a_corrupt_checkpoint_stops_the_job_with_one_sentence(tmp_path):
    (tmp_path / checkpoint.FILENAME).write_bytes(b"not a checkpoint")
    with pytest.raises(checkpoint.CheckpointError, match="not a readable checkpoint"):
        sweeps.job_state(tmp_path, config_of())
