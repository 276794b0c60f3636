"""processes=K: the members split over K processes, each running the whole loop, give the run that one process
gives; stopping, crashing and resuming keep every row exactly once."""

from __future__ import annotations

import multiprocessing
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from rlzoo import checkpoint, loop, processes
from rlzoo.errors import ConfigError
from rlzoo.train import train
from conftest import make_cfg, read_rows

RUN = ["total_steps=1200", "learning_starts=200", "eval_every=400", "eval_episodes=2", "log_every=100",
       "checkpoint_every=500", "n_seeds=3", "buffer_size=1000", "batch_size=32", "network.hidden_sizes=[32,32]",
       "progress=false"]
QTABLE = ["agent=qtable", "env=cliffwalking", "replay.capacity=1", "replay.batch_size=1", "train_freq=1",
          "learning_starts=1", "total_steps=1200", "eval_every=400", "eval_episodes=1", "log_every=100",
          "checkpoint_every=500", "n_seeds=3", "progress=false"]


def sorted_rows(path: Path) -> list[dict]:
    """Rows in a canonical order: the processes' rows interleave in the file."""
    rows = read_rows(path)
    return sorted(rows, key=lambda r: (int(r["seed"]), r.get("phase", ""), int(r["step"]), int(r.get("episode") or 0)))


def same_results(a: Path, b: Path) -> None:
    for name in ("returns.csv", "metrics.csv"):
        rows_a, rows_b = sorted_rows(a / name), sorted_rows(b / name)
        assert len(rows_a) > 20 and rows_a == rows_b, name


def shard_weights(path: Path, shards: int = 2) -> list[dict]:
    return [checkpoint.read(path / checkpoint.shard_filename(k))["agent"] for k in range(shards)]


def same_weights(a, b) -> None:
    if isinstance(a, torch.Tensor):
        assert torch.equal(a, b)
    elif isinstance(a, dict):
        assert a.keys() == b.keys()
        for k in a:
            same_weights(a[k], b[k])
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            same_weights(x, y)
    else:
        assert a == b


@pytest.mark.parametrize("overrides,agent", [(RUN, "dqn"), (RUN + ["agent=dueling_double_dqn"], "dueling_double_dqn"),
                                             (QTABLE, "qtable")], ids=["dqn", "dueling-double-dqn", "qtable-cliffwalking"])
def test_two_processes_write_the_rows_of_one_process(tmp_path, overrides, agent):
    one = train(make_cfg(*overrides), tmp_path / "one", agent)
    two = train(make_cfg(*overrides, "processes=2"), tmp_path / "two", agent)
    same_results(tmp_path / "one", tmp_path / "two")
    assert two["bounds"] == [(0, 2), (2, 3)] and two["steps"] == [1200, 1200]
    assert sorted(p.name for p in (tmp_path / "two").glob("checkpoint*")) == ["checkpoint.shard0.pt", "checkpoint.shard1.pt"]
    # the second process's checkpoint holds member 2's networks, as trained in one process
    full = one["agent"].state_dict()
    mine = checkpoint.from_plain(checkpoint.read(tmp_path / "two" / "checkpoint.shard1.pt")["agent"])
    tensors = full["q_net"] if "q_net" in full else {"q": full["q"]}
    for name, value in tensors.items():
        theirs = mine["q_net"][name] if "q_net" in full else mine["q"]
        assert value.shape[0] == 3 and torch.equal(value[2:3], theirs), name
    assert not multiprocessing.active_children()


class Killed(Exception):
    pass


def test_a_worker_stopped_by_a_signal_stops_the_run_and_resume_completes_it(tmp_path, monkeypatch):
    """SIGTERM reaches one worker (as from a scheduler that signals every process): it checkpoints and stops,
    the parent stops the other one, and resuming writes the rows of a run that never stopped."""
    train(make_cfg(*RUN, "processes=2"), tmp_path / "straight", "dqn")
    original = checkpoint.Checkpointer.save

    def save(self, state):
        if state.step == 500 and self.path.name == "checkpoint.shard1.pt" and self.signum is None:
            os.kill(os.getpid(), signal.SIGTERM)  # this worker's own pid
            time.sleep(0.01)
        original(self, state)
    monkeypatch.setattr(checkpoint.Checkpointer, "save", save)
    with pytest.raises(checkpoint.RunStopped, match=r"stopped by SIGTERM at steps \[\d+, 500\] of 1200 \(2 processes\)"):
        train(make_cfg(*RUN, "processes=2"), tmp_path / "run", "dqn")
    monkeypatch.undo()
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL  # the parent's handlers are restored
    assert max(int(r["step"]) for r in read_rows(tmp_path / "run" / "metrics.csv") if r["seed"] == "2") == 500
    done = train(make_cfg(*RUN, "processes=2", "resume=true"), tmp_path / "run", "dqn")
    assert done["steps"] == [1200, 1200]
    same_results(tmp_path / "straight", tmp_path / "run")
    same_weights(shard_weights(tmp_path / "straight"), shard_weights(tmp_path / "run"))


def test_signal_to_the_parent_stops_every_process(tmp_path, monkeypatch):
    """SIGTERM to the training process (the one a user or Hydra sees) is forwarded: each worker checkpoints at
    its own step; resume drops each seed's rows past its own checkpoint and writes them again."""
    train(make_cfg(*RUN, "processes=2"), tmp_path / "straight", "dqn")

    class SignalOnFirstUpdate(processes.Progress):
        def update(self, step, sps, recent, force=False):
            if not getattr(self, "sent", False):  # at the first report from a worker
                self.sent = True
                os.kill(os.getpid(), signal.SIGTERM)
            super().update(step, sps, recent, force)
    monkeypatch.setattr(processes, "Progress", SignalOnFirstUpdate)
    with pytest.raises(checkpoint.RunStopped, match="stopped by SIGTERM at steps"):
        train(make_cfg(*RUN, "processes=2"), tmp_path / "run", "dqn")
    monkeypatch.undo()
    steps = [checkpoint.read(tmp_path / "run" / checkpoint.shard_filename(k))["step"] for k in range(2)]
    assert all(0 < s < 1200 for s in steps), steps  # each at its own step
    train(make_cfg(*RUN, "processes=2", "resume=true"), tmp_path / "run", "dqn")
    same_results(tmp_path / "straight", tmp_path / "run")
    same_weights(shard_weights(tmp_path / "straight"), shard_weights(tmp_path / "run"))


def test_a_crashed_worker_stops_the_run_with_its_error_and_resume_completes_it(tmp_path, monkeypatch):
    train(make_cfg(*RUN, "processes=2"), tmp_path / "straight", "dqn")

    def crash(metrics, step, seeds):
        if step >= 1150 and seeds[0] == 0:
            raise Killed("boom")
    monkeypatch.setattr(loop, "check_finite", crash)
    with pytest.raises(Killed, match="boom") as err:
        train(make_cfg(*RUN, "processes=2"), tmp_path / "run", "dqn")
    monkeypatch.undo()
    assert any("seeds 0..1" in note and "Traceback" in note for note in err.value.__notes__)
    assert not multiprocessing.active_children()  # the other worker was stopped
    # rows past the first process's checkpoint (step 1000) are in the file: resume drops and rewrites them
    assert max(int(r["step"]) for r in read_rows(tmp_path / "run" / "metrics.csv") if r["seed"] == "0") == 1100
    train(make_cfg(*RUN, "processes=2", "resume=true"), tmp_path / "run", "dqn")
    same_results(tmp_path / "straight", tmp_path / "run")
    same_weights(shard_weights(tmp_path / "straight"), shard_weights(tmp_path / "run"))


def test_a_worker_killed_outright_is_reported(tmp_path, monkeypatch):
    def die(metrics, step, seeds):
        if step >= 300 and seeds[0] == 2:
            os.kill(os.getpid(), signal.SIGKILL)
    monkeypatch.setattr(loop, "check_finite", die)
    with pytest.raises(RuntimeError, match=r"seeds 2\.\.2 failed:\nit exited \(code -9\)"):
        train(make_cfg(*RUN, "processes=2"), tmp_path / "run", "dqn")
    assert not multiprocessing.active_children()


def test_resume_refuses_lost_rows_and_another_process_count(tmp_path):
    train(make_cfg(*RUN, "processes=2"), tmp_path / "run", "dqn")
    with pytest.raises(checkpoint.CheckpointError, match="processes=2, which this command changes"):
        train(make_cfg(*RUN, "processes=3", "resume=true"), tmp_path / "run", "dqn")
    with pytest.raises(checkpoint.CheckpointError, match="trained with processes > 1"):
        train(make_cfg(*RUN, "resume=true"), tmp_path / "run", "dqn")
    with pytest.raises(checkpoint.CheckpointError, match="already holds a run with a checkpoint"):
        train(make_cfg(*RUN, "processes=2"), tmp_path / "run", "dqn")
    path = tmp_path / "run" / "returns.csv"
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(lines[:-3]))  # three rows lost
    with pytest.raises(checkpoint.CheckpointError, match="up to step 1200, but .* were written before their checkpoint"):
        train(make_cfg(*RUN, "processes=2", "resume=true"), tmp_path / "run", "dqn")
    (tmp_path / "run" / "checkpoint.shard1.pt").unlink()
    with pytest.raises(checkpoint.CheckpointError, match="lacks checkpoint.shard1.pt"):
        train(make_cfg(*RUN, "processes=2", "resume=true"), tmp_path / "run", "dqn")


@pytest.mark.parametrize("overrides,message", [
    (["processes=0"], "processes must be >= 1"),
    (["processes=2", "learner_workers=2"], "processes > 1 and learner_workers > 1 cannot be combined"),
    (["processes=2", "env=minatar", "env.game=pong"], "not a MinAtar game"),  # raised inside a worker
])
def test_bad_values(tmp_path, overrides, message):
    with pytest.raises(ConfigError) as err:
        train(make_cfg(*RUN, *overrides), tmp_path, "dqn")
    assert message in str(err.value) and "\n" not in str(err.value)
    assert not any((tmp_path / name).exists() for name in ("returns.csv", "metrics.csv"))


def test_cli_ctrl_c_stops_all_processes_and_resume_finishes(tmp_path):
    """Ctrl-C in a terminal sends SIGINT to every process of the foreground group: the workers ignore it and
    the training process stops them; the command exits 130 with the resume command."""
    args = [sys.executable, "-m", "rlzoo", "n_seeds=2", "processes=2", "total_steps=12000", "learning_starts=1000",
            "eval_every=0", "log_every=500", "checkpoint_every=0", "progress=false", f"hydra.run.dir={tmp_path}"]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    metrics = tmp_path / "metrics.csv"
    deadline = time.time() + 60
    while time.time() < deadline and not (metrics.exists() and len(metrics.read_text().splitlines()) > 4):
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "stopped by SIGINT at steps" in err and "resume=true" in err and "Traceback" not in err, err
    steps = [checkpoint.read(tmp_path / checkpoint.shard_filename(k))["step"] for k in range(2)]
    assert all(1000 <= s < 12000 for s in steps), steps
    resumed = subprocess.run([*args, "resume=true"], capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    rows = read_rows(metrics)
    assert sorted((r["seed"], int(r["step"])) for r in rows) == sorted(
        (s, step) for s in ("0", "1") for step in range(500, 12001, 500))  # every row once


class FakeConn:
    def __init__(self):
        self.sent = []

    def send(self, message):
        self.sent.append(message)


def test_outbox_sends_rows_in_batches_within_the_wait_and_counts_them(monkeypatch):
    clock = [100.0]
    monkeypatch.setattr(processes.time, "perf_counter", lambda: clock[0])
    conn = FakeConn()
    box = processes._Outbox(conn, shard=1, max_wait=0.25, max_rows=3, progress_every=0.5)
    box.row("returns", {"step": 1})
    box.row("metrics", {"step": 1})
    assert conn.sent == []  # waiting for more rows
    box.row("returns", {"step": 2})  # the third row fills the batch
    assert conn.sent == [(processes.ROWS, [("returns", {"step": 1}), ("metrics", {"step": 1}), ("returns", {"step": 2})])]
    box.row("returns", {"step": 3})
    clock[0] += 0.2
    box.update(3, 10.0, [1.0])  # progress sent (first call); the row is 0.2 s old: it waits
    assert conn.sent[-1] == (processes.PROGRESS, 1, 3, 10.0, [1.0]) and len(conn.sent) == 2
    clock[0] += 0.1
    box.update(4, 10.0, [1.0])  # now 0.3 s old: sent; the next progress report waits for 0.5 s
    assert conn.sent[-1] == (processes.ROWS, [("returns", {"step": 3})]) and len(conn.sent) == 3
    box.row("metrics", {"step": 5})
    box.flush()
    assert conn.sent[-1] == (processes.ROWS, [("metrics", {"step": 5})])
    box.flush()  # nothing left: nothing sent
    assert len(conn.sent) == 4
    assert box.counts == {"returns.csv": 3, "metrics.csv": 2}
