"""learner_workers: updates split over processes by member give the run that one process gives."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

import numpy as np
import pytest
import torch

from rlzoo.errors import ConfigError
from rlzoo.parallel import ShardedLearner, member_slice, shard_bounds
from rlzoo.train import build, learner, train
from conftest import make_cfg, read_rows

RUN = ["total_steps=700", "learning_starts=200", "train_freq=1", "eval_every=350", "eval_episodes=2", "log_every=50",
       "checkpoint_every=0", "buffer_size=1000", "batch_size=32", "network.hidden_sizes=[32,32]", "progress=false"]


def test_shard_bounds_cover_the_population_in_near_equal_contiguous_parts():
    assert shard_bounds(10, 2) == [(0, 5), (5, 10)]
    assert shard_bounds(7, 3) == [(0, 3), (3, 5), (5, 7)]
    assert shard_bounds(2, 4) == [(0, 1), (1, 2)]  # never an empty shard


def test_a_member_slice_shares_its_parameters_with_the_full_network():
    parts = build(make_cfg(*RUN, "n_seeds=4", "agent=dueling_dqn"), "/tmp/unused-rlzoo-test", "dueling_dqn")
    full = parts["agent"].q_net
    shard = member_slice(full, 1, 3)
    for pf, ps in zip(full.parameters(), shard.parameters()):
        assert ps.shape == (2, *pf.shape[1:]) and ps.data_ptr() == pf[1:3].data_ptr()
    with torch.no_grad():
        next(shard.parameters()).add_(1.0)
    obs = torch.randn(4, 3, 4)
    with torch.no_grad():  # the shard computes members 1 and 2 of the full network, after the write too
        torch.testing.assert_close(shard(obs[1:3]), full(obs)[1:3], rtol=0, atol=0)
    parts["logger"].close()


@pytest.mark.parametrize("agent", ["dqn", "dueling_double_dqn"])
def test_a_run_with_two_learner_processes_equals_the_run_with_one(tmp_path, agent):
    """The numpy learner's arithmetic per member does not depend on the population size: bit for bit."""
    common = [*RUN, "n_seeds=3", f"agent={agent}"]
    one = train(make_cfg(*common), tmp_path / "one", agent)
    two = train(make_cfg(*common, "learner_workers=2"), tmp_path / "two", agent)
    for name in ("returns.csv", "metrics.csv"):
        rows = read_rows(tmp_path / "one" / name)
        assert len(rows) > 20 and rows == read_rows(tmp_path / "two" / name), name
    assert two["agent"].updates == one["agent"].updates == 501
    for key, value in one["agent"].state_dict()["q_net"].items():  # the workers' updates reached the parent
        assert torch.equal(value, two["agent"].state_dict()["q_net"][key]), key
    for a, b in zip(one["agent"].optimizer.state.values(), two["agent"].optimizer.state.values()):
        assert all(torch.equal(a[k], b[k]) for k in a)
    assert not multiprocessing.active_children()  # the workers were stopped


def fill(replay, steps: int, rng) -> None:
    P = replay.population
    for _ in range(steps):
        obs, nxt = rng.normal(size=(P, 4)).astype(np.float32), rng.normal(size=(P, 4)).astype(np.float32)
        replay.add(obs, rng.integers(0, 2, P), rng.normal(size=P), nxt, rng.random(P) < 0.1, np.zeros(P, bool))


def test_pytorch_learner_updates_split_over_processes_match_one_process(tmp_path):
    """With autograd (cpu_numpy=false) torch's kernels may round differently for 1 and 3 members:
    the same updates to float32 tolerance."""
    cfg = make_cfg(*RUN, "n_seeds=3", "agent=dueling_double_dqn", "cpu_numpy=false")
    one, two = build(cfg, tmp_path / "one", "dqn"), build(cfg, tmp_path / "two", "dqn")
    fill(one["replay"], 100, np.random.default_rng(1))
    fill(two["replay"], 100, np.random.default_rng(1))
    sharded = learner(two["agent"], 2, 3)
    try:
        for _ in range(5):
            m1, m2 = one["agent"].update(one["replay"].sample()), sharded.update(two["replay"].sample())
            for key in m1:
                torch.testing.assert_close(m1[key], m2[key], rtol=1e-5, atol=1e-6)
        for p1, p2 in zip(one["agent"].q_net.parameters(), two["agent"].q_net.parameters()):
            torch.testing.assert_close(p1, p2, rtol=1e-5, atol=1e-6)
    finally:
        sharded.close()
        one["logger"].close()
        two["logger"].close()


def test_a_failing_worker_stops_the_run_with_its_traceback(tmp_path):
    parts = build(make_cfg(*RUN, "n_seeds=2"), tmp_path, "dqn")
    sharded = ShardedLearner(parts["agent"], 2)
    make_shard = sharded._shard_agent

    def broken_second_shard(a, b):
        shard = make_shard(a, b)
        if a > 0:
            shard.update = lambda batch: 1 / 0
        return shard
    sharded._shard_agent = broken_second_shard
    fill(parts["replay"], 40, np.random.default_rng(0))
    try:
        with pytest.raises(RuntimeError, match="(?s)a learner worker failed.*ZeroDivisionError"):
            sharded.update(parts["replay"].sample())
    finally:
        sharded.close()
        parts["logger"].close()
    assert not multiprocessing.active_children()


def test_learner_workers_is_checked_and_ignored_where_it_cannot_apply(tmp_path, caplog):
    with pytest.raises(ConfigError, match="learner_workers must be >= 1"):
        train(make_cfg(*RUN, "learner_workers=0"), tmp_path / "a", "dqn")
    with pytest.raises(ConfigError, match="learner_workers > 1 needs optimizer=adam"):
        train(make_cfg(*RUN, "n_seeds=2", "learner_workers=2", "optimizer=rmsprop"), tmp_path / "b", "dqn")
    solo = build(make_cfg(*RUN, "learner_workers=4"), tmp_path / "c", "dqn")
    assert learner(solo["agent"], 4, 1) is solo["agent"]  # one member: nothing to split
    table = build(make_cfg("agent=qtable", "env=frozenlake", "n_seeds=2", "replay.capacity=1", "replay.batch_size=1",
                           "progress=false"), tmp_path / "d", "qtable")
    assert learner(table["agent"], 2, 2) is table["agent"]
    assert "learner_workers=2 ignored" in caplog.text
    for parts in (solo, table):
        parts["logger"].close()


def test_workers_exit_when_the_training_process_is_killed(tmp_path):
    """SIGKILL leaves no handler to stop the workers: they see their pipe close and exit."""
    import os
    import subprocess
    import sys
    import time
    script = f"""
import os, signal, sys
import numpy as np
sys.path.insert(0, {str(Path(__file__).parent)!r})
from conftest import make_cfg
from test_parallel import RUN, fill
from rlzoo.train import build, learner
parts = build(make_cfg(*RUN, "n_seeds=3"), {str(tmp_path)!r}, "dqn")
fill(parts["replay"], 40, np.random.default_rng(0))
sharded = learner(parts["agent"], 3, 3)
sharded.update(parts["replay"].sample())
print(" ".join(str(p.pid) for p in sharded._procs), flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert out.returncode == -9, out.stderr
    pids = [int(p) for p in out.stdout.split()]
    assert len(pids) == 2

    def alive(pid):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        with open(f"/proc/{pid}/stat") as f:  # an exited child of no one waits as a zombie until reaped
            return f.read().split()[2] != "Z"
    deadline = time.time() + 10
    while any(alive(p) for p in pids) and time.time() < deadline:
        time.sleep(0.1)
    assert not any(alive(p) for p in pids)
