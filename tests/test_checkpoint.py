"""Checkpoints and resume: a run stopped (by a signal, or killed between checkpoints) and resumed writes the
same CSV rows and ends with the same weights as a run that was never stopped."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from rlzoo import loop
from rlzoo.io import checkpoint
from rlzoo.train import train
from conftest import make_cfg, read_rows

DQN = ["total_steps=1200", "learning_starts=200", "eval_every=400", "eval_episodes=2", "log_every=100",
       "checkpoint_every=500", "n_seeds=2", "buffer_size=1000", "progress=false"]
# Q-table on gymnasium's CliffWalking (a SyncVectorEnv: its state is restored attribute by attribute)
QTABLE = ["agent=qtable", "env=cliffwalking", "replay.capacity=1", "replay.batch_size=1", "train_freq=1",
          "learning_starts=1", "total_steps=1500", "eval_every=500", "eval_episodes=1", "log_every=100",
          "checkpoint_every=400", "n_seeds=2", "progress=false"]


def same_results(a: Path, b: Path) -> None:
    for name in ("returns.csv", "metrics.csv"):
        rows_a, rows_b = read_rows(a / name), read_rows(b / name)
        assert len(rows_a) > 5 and rows_a == rows_b, name


def same_weights(sa: dict, sb: dict) -> None:
    """Agent state dicts equal exactly: tensors bit for bit, everything else by value."""
    assert sa.keys() == sb.keys()
    for k in sa:
        if isinstance(sa[k], torch.Tensor):
            assert torch.equal(sa[k], sb[k]), k
        elif isinstance(sa[k], dict):
            same_weights(sa[k], sb[k])
        elif isinstance(sa[k], list):
            assert len(sa[k]) == len(sb[k])
            for x, y in zip(sa[k], sb[k]):
                same_weights({0: x}, {0: y})
        else:
            assert sa[k] == sb[k], k


@pytest.fixture
def signal_at(monkeypatch):
    """Make the checkpoint written at ``step`` see a SIGTERM that arrived during that step (a real signal to
    this process, handled by the run's own handler)."""
    def arm(step: int):
        original = checkpoint.Checkpointer.save

        def save(self, state):
            if state.step == step and self.signum is None:
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(0.01)  # let Python run the handler
                assert self.stop_requested
            original(self, state)
        monkeypatch.setattr(checkpoint.Checkpointer, "save", save)
        return lambda: monkeypatch.setattr(checkpoint.Checkpointer, "save", original)
    return arm


class Killed(Exception):
    pass


@pytest.mark.parametrize("overrides,agent", [(DQN, "dqn"), (QTABLE, "qtable")],
                         ids=["dqn-cartpole-P2", "qtable-cliffwalking-P2"])
def test_stopped_and_killed_runs_resume_to_the_same_rows_and_weights(tmp_path, monkeypatch, signal_at, overrides, agent):
    straight = train(make_cfg(*overrides), tmp_path / "straight", agent)

    # 1. SIGTERM during step 500: the run checkpoints there and stops with RunStopped.
    disarm = signal_at(500 if agent == "dqn" else 400)
    with pytest.raises(checkpoint.RunStopped, match="stopped by SIGTERM at step"):
        train(make_cfg(*overrides), tmp_path / "signal", agent)
    disarm()
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL  # handlers are restored
    resumed = train(make_cfg(*overrides, "resume=true"), tmp_path / "signal", agent)
    same_results(tmp_path / "straight", tmp_path / "signal")
    same_weights(straight.agent.state_dict(), resumed.agent.state_dict())

    # 2. Killed hard between checkpoints: the CSVs hold rows past the last checkpoint, which resume cuts off
    #    and writes again (never duplicated, never lost).
    def crash(metrics, step, seeds):
        if step >= 1150:
            raise Killed
    monkeypatch.setattr(loop, "check_finite", crash)
    with pytest.raises(Killed):
        train(make_cfg(*overrides), tmp_path / "killed", agent)
    monkeypatch.undo()
    saved = torch.load(tmp_path / "killed" / checkpoint.FILENAME, weights_only=True)["step"]
    assert saved < 1150 and max(int(r["step"]) for r in read_rows(tmp_path / "killed" / "metrics.csv")) > saved
    resumed = train(make_cfg(*overrides, "resume=true"), tmp_path / "killed", agent)
    same_results(tmp_path / "straight", tmp_path / "killed")
    same_weights(straight.agent.state_dict(), resumed.agent.state_dict())
    # The final checkpoint holds the final state.
    final = checkpoint.read(tmp_path / "killed" / checkpoint.FILENAME)
    assert final["step"] == straight.state.step
    same_weights(straight.agent.state_dict(), checkpoint.from_plain(final["run"]["agent"]))


def test_checkpoint_holds_every_part_and_time_continues(tmp_path):
    parts = train(make_cfg(*DQN), tmp_path, "dqn")
    payload = checkpoint.read(tmp_path / checkpoint.FILENAME)
    assert set(payload) == {"format", "version", "step", "meta", "run"}
    run = checkpoint.from_plain(payload["run"])
    assert set(run) == {"agent", "replay", "loop", "envs", "rng"}
    assert set(run["agent"]) == {"q_net", "target_net", "optimizer", "lr_scheduler", "updates", "env_step"}
    assert run["agent"]["updates"] == parts.agent.updates
    state = loop.LoopState(**run["loop"])
    assert state.step == 1200 and state.explore_rngs[0].bit_generator.state == parts.state.explore_rngs[0].bit_generator.state
    assert set(run["envs"]) == {"state", "elapsed", "rngs"}  # CartPole's own state_dict
    assert state.clock > 0  # a resumed run's time column continues from here


def test_a_failed_write_leaves_the_previous_checkpoint(tmp_path, monkeypatch):
    train(make_cfg(*DQN), tmp_path, "dqn")
    path = tmp_path / checkpoint.FILENAME
    before = path.read_bytes()

    def dies_halfway(obj, f, *a, **k):
        f.write(b"PK\x03\x04 partial")
        raise KeyboardInterrupt  # killed while writing
    monkeypatch.setattr(torch, "save", dies_halfway)
    with pytest.raises(KeyboardInterrupt):
        checkpoint.write_atomic({"x": 1}, path)
    assert path.read_bytes() == before and not path.with_name(path.name + ".tmp").exists()
    assert checkpoint.read(path)["step"] == 1200


def test_resume_refuses_a_changed_config_and_a_fresh_run_refuses_a_used_directory(tmp_path):
    train(make_cfg(*DQN), tmp_path, "dqn")
    rows = (tmp_path / "returns.csv").read_bytes()
    with pytest.raises(checkpoint.CheckpointError, match=r"lr=0.0005.*resume=true"):
        train(make_cfg(*DQN, "lr=0.01", "resume=true"), tmp_path, "dqn")
    with pytest.raises(checkpoint.CheckpointError, match="already holds a run with a checkpoint"):
        train(make_cfg(*DQN), tmp_path, "dqn")
    (tmp_path / checkpoint.FILENAME).unlink()
    with pytest.raises(checkpoint.CheckpointError, match="already holds results"):
        train(make_cfg(*DQN), tmp_path, "dqn")
    with pytest.raises(checkpoint.CheckpointError, match="has no checkpoint.pt"):
        train(make_cfg(*DQN, "resume=true"), tmp_path, "dqn")
    assert (tmp_path / "returns.csv").read_bytes() == rows


@pytest.mark.slow
def test_sigterm_to_the_cli_checkpoints_and_the_resumed_run_equals_a_straight_one(tmp_path):
    """A real ``python -m rlzoo`` run gets SIGTERM at whatever step it has reached; ``resume=true`` finishes it."""
    args = ["total_steps=4000", "learning_starts=200", "eval_every=1000", "eval_episodes=2", "log_every=100",
            "n_seeds=2", "buffer_size=2000", "progress=false"]
    run_dir = tmp_path / "cli"
    proc = subprocess.Popen([sys.executable, "-m", "rlzoo", *args, "checkpoint_every=0", f"hydra.run.dir={run_dir}"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    metrics = run_dir / "metrics.csv"
    deadline = time.time() + 120
    while time.time() < deadline and (not metrics.exists() or metrics.read_text().count("\n") < 5):
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "Traceback" not in err
    message = [line for line in err.splitlines() if line.startswith("rlzoo:")]
    assert len(message) == 1 and "stopped by SIGTERM at step" in message[0] and "resume=true" in message[0]
    stopped_at = checkpoint.read(run_dir / checkpoint.FILENAME)["step"]
    assert 0 < stopped_at < 4000
    # Resume exactly as the message says (plus a final checkpoint, to compare weights).
    resume = subprocess.run([sys.executable, "-m", "rlzoo", *args, "checkpoint_every=0", f"hydra.run.dir={run_dir}",
                             "resume=true", "checkpoint_every=100000"], capture_output=True, text=True, timeout=300)
    assert resume.returncode == 0, resume.stderr
    straight = train(make_cfg(*args, "checkpoint_every=0"), tmp_path / "straight", "dqn")
    same_results(tmp_path / "straight", run_dir)
    final = checkpoint.read(run_dir / checkpoint.FILENAME)
    same_weights(straight.agent.state_dict(), checkpoint.from_plain(final["run"]["agent"]))


def test_an_env_whose_state_cannot_be_saved_restarts_its_episodes_on_resume(tmp_path, signal_at):
    """MinAtar's game object is not plain data: resume restarts the running episodes (documented) and goes on,
    without duplicated or lost CSV rows up to the checkpoint."""
    args = ["+experiment=minatar", "total_steps=900", "learning_starts=100", "buffer_size=1000", "log_every=100",
            "checkpoint_every=400", "eval_every=0", "progress=false"]
    disarm = signal_at(400)
    with pytest.raises(checkpoint.RunStopped):
        train(make_cfg(*args), tmp_path, "dqn")
    disarm()
    before = read_rows(tmp_path / "metrics.csv")
    assert checkpoint.from_plain(checkpoint.read(tmp_path / checkpoint.FILENAME)["run"]["envs"]) == {}
    parts = train(make_cfg(*args, "resume=true"), tmp_path, "dqn")
    after = read_rows(tmp_path / "metrics.csv")
    assert after[:len(before)] == before
    assert [int(r["step"]) for r in after] == list(range(100, 901, 100))
    assert parts.state.step == 900 and parts.agent.updates == (900 - 100) // 1 + 1
