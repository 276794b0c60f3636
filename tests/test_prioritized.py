"""Prioritized replay: the sum tree, sampling frequencies against priorities (a statistical test), importance
weights against the formula, max-priority insertion, beta annealing, valid slots of both storages, and real runs
(member = solo, checkpoint/resume, composed configs on CartPole, MinAtar and Atari frames)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from hydra.utils import instantiate
from scipy import stats

from conftest import make_cfg, read_rows
from rlzoo import loop
from rlzoo.errors import ConfigError
from rlzoo.io import checkpoint
from rlzoo.replay import FrameStorage, PrioritizedSampler, Replay, SumTree, TransitionStorage, ValidSlots
from rlzoo.train import train
from test_checkpoint import Killed, same_results, same_weights
from test_frame_replay import H, K, W, StackedTrajectory


def test_sum_tree_sums_and_finds_by_cumulative_priority():
    tree = SumTree(population=2, capacity=5)  # 8 leaves
    tree.set(np.array([[0, 1, 2, 4], [3, 3, 3, 3]]), np.array([[1.0, 2.0, 0.5, 4.0], [2.5, 2.5, 2.5, 2.5]]))
    assert tree.total().tolist() == [7.5, 2.5]
    # member 0: slot 0 covers [0, 1), slot 1 [1, 3), slot 2 [3, 3.5), slot 3 nothing, slot 4 [3.5, 7.5)
    targets = np.array([[0.0, 0.99, 1.0, 2.99, 3.0, 3.49, 3.5, 7.49], [0.0, 1.0, 2.0, 2.49, 0.5, 1.5, 2.4, 0.1]])
    assert tree.find(targets).tolist() == [[0, 0, 1, 1, 2, 2, 4, 4], [3] * 8]
    # a target at or past the total (rounding) still lands on a slot with priority > 0
    assert tree.find(np.array([[7.5, 100.0], [2.5, 3.0]])).tolist() == [[4, 4], [3, 3]]
    tree.set(np.array([[4], [3]]), np.array([[0.0], [1.0]]))
    assert tree.total().tolist() == [3.5, 1.0]
    assert tree.get(np.array([[1, 4], [3, 0]])).tolist() == [[2.0, 0.0], [1.0, 0.0]]


def make_sampler(seeds=(0, 1), capacity=40, **kw):
    kw = {"alpha": 0.6, "beta": 0.4, "beta_updates": 100, **kw}
    return PrioritizedSampler(list(seeds), capacity=capacity, **kw)


def fill(sampler, n):
    for slot in range(n):
        sampler.added(slot)


def valid(P, size, capacity=40):
    return ValidSlots(np.zeros(P, dtype=np.int64), np.full(P, size, dtype=np.int64), capacity)


def test_sampling_frequencies_follow_the_priorities_chi_square():
    """Draw 400 batches of 64 from 30 slots with TD errors 0..29 (p = (|d| + eps)^0.6): the counts agree with
    ``draws * P(i)``. Stratified draws vary less than independent ones, so the chi-square test (computed as if the
    draws were independent) rejects a correct sampler with probability below its level 0.001 (the test's
    false-failure rate, per member; the seeds are fixed, so it passes or fails the same way every run). A sampler
    that drew uniformly or in proportion to |d| instead of |d|^alpha fails it (checked below)."""
    sampler = make_sampler(alpha=0.6)
    fill(sampler, 30)
    td = np.tile(np.arange(30.0), (2, 1))
    sampler.update(np.tile(np.arange(30), (2, 1)), torch.from_numpy(td))
    p = (td[0] + 1e-6) ** 0.6
    expected = p / p.sum()
    counts = np.zeros((2, 40))
    for _ in range(400):
        slots, _ = sampler.sample(valid(2, 30), 64)
        np.add.at(counts, (np.arange(2)[:, None], slots), 1)
    assert counts[:, 30:].sum() == 0 and counts[:, 0].sum() <= 2  # slot 0 has priority 1e-6 ** 0.6 ~ 2.5e-4
    for i in range(2):
        n = counts[i, :30].sum()
        assert stats.chisquare(counts[i, 1:30], n * expected[1:30] / expected[1:30].sum()).pvalue > 1e-3
        for wrong in (np.ones(29), td[0, 1:]):  # uniform; alpha = 1
            assert stats.chisquare(counts[i, 1:30], n * wrong / wrong.sum()).pvalue < 1e-6


def test_importance_weights_follow_the_formula():
    sampler = make_sampler(alpha=0.5, beta=0.4, beta_updates=10)
    fill(sampler, 20)
    td = np.random.default_rng(0).uniform(0, 5, (2, 20))
    sampler.update(np.tile(np.arange(20), (2, 1)), td)
    p = (td + 1e-6) ** 0.5
    prob = p / p.sum(axis=1, keepdims=True)
    for draw in range(3):
        slots, w = sampler.sample(valid(2, 20), 16)
        beta = 0.4 + 0.6 * draw / 10
        chosen = np.take_along_axis(prob, slots, axis=1)
        want = (20 * chosen) ** -beta
        want /= want.max(axis=1, keepdims=True)  # normalised by the minibatch's largest weight
        np.testing.assert_allclose(w, want, rtol=1e-6)
        assert w.dtype == np.float32 and w.max() == 1.0


def test_new_transitions_get_the_largest_priority_seen():
    sampler = make_sampler(alpha=0.5)
    fill(sampler, 3)
    assert sampler.tree.get(np.tile(np.arange(3), (2, 1))).tolist() == [[1.0] * 3] * 2  # before any TD error: 1
    sampler.update(np.array([[0, 1], [0, 1]]), np.array([[8.0, -3.0], [0.5, 0.25]]))
    sampler.update(np.array([[2], [2]]), np.array([[1.0], [0.5]]))  # smaller ones do not lower the maximum
    sampler.added(3)
    leaf = sampler.tree.get(np.array([[3], [3]]))[:, 0]
    np.testing.assert_allclose(leaf, [(8.0 + 1e-6) ** 0.5, 1.0])  # member 1 never exceeded the initial 1
    np.testing.assert_allclose(sampler.tree.get(np.array([[1], [1]]))[:, 0],
                               [(3.0 + 1e-6) ** 0.5, (0.25 + 1e-6) ** 0.5])


def test_beta_rises_linearly_to_beta_end_over_the_run_then_stays():
    sampler = make_sampler(beta=0.4, beta_end=1.0, beta_updates=None, total_updates=4)
    fill(sampler, 5)
    betas = []
    for _ in range(6):
        betas.append(sampler.beta())
        sampler.sample(valid(2, 5), 4)
    np.testing.assert_allclose(betas, [0.4, 0.55, 0.7, 0.85, 1.0, 1.0])
    assert make_sampler(beta_updates=2, total_updates=100).anneal == 2  # an explicit length wins


def test_replay_completes_the_sampler_with_capacity_and_the_run_length():
    cfg = make_cfg("replay=prioritized", "buffer_size=64", "batch_size=8", "total_steps=1000", "learning_starts=100",
                   "train_freq=4", "gradient_steps=2")
    from rlzoo.train import num_updates
    replay = instantiate(cfg.replay, obs_shape=(3,), obs_dtype=np.float32, seeds=[3, 4], device=torch.device("cpu"),
                         total_updates=num_updates(1000, 100, 4) * 2)
    assert isinstance(replay.sampler, PrioritizedSampler) and isinstance(replay.storage, TransitionStorage)
    assert replay.sampler.tree.capacity == 64 and replay.sampler.anneal == 2 * (250 - 24)
    assert (replay.sampler.alpha, replay.sampler.beta0, replay.sampler.beta_end) == (0.6, 0.4, 1.0)


@pytest.mark.parametrize("override, message", [
    ("replay.sampler.alpha=-1", "replay.sampler.alpha must be a number >= 0, got -1"),
    ("replay.sampler.beta=1.5", "replay.sampler.beta must be in [0, 1], got 1.5"),
    ("replay.sampler.eps=0", "replay.sampler.eps must be > 0, got 0"),
])
def test_bad_values_are_one_line_errors_naming_the_key(tmp_path, override, message):
    with pytest.raises(ConfigError) as err:
        train(make_cfg("replay=prioritized", override, "total_steps=10", "learning_starts=5", "progress=false"),
              tmp_path, "dqn")
    assert str(err.value).startswith(message) and "\n" not in str(err.value)


def test_frame_storage_slots_that_left_the_valid_range_are_never_drawn():
    """Short episodes in a small frame store: the oldest transitions lose their frames without their slots being
    rewritten. Their priority drops to 0, the tree's total is the sum over the valid slots, every draw is valid."""
    traj = StackedTrajectory(np.random.default_rng(3), population=2, mean_len=2)
    replay = Replay(64, 32, lambda **kw: FrameStorage(**kw, frame_capacity=40), make_sampler, (K, H, W), np.uint8,
                    [0, 1])
    invalid_seen = False
    for step in range(300):
        replay.add(*traj.step())
        if step >= 40:
            v = replay.storage.valid()
            batch = replay.sample()
            offset = (batch.indices - v.start[:, None]) % 64
            assert (offset < v.size[:, None]).all()
            replay.update_priorities(batch.indices, torch.rand(2, 32) * 3)
            for i in range(2):
                slots = (v.start[i] + np.arange(v.size[i])) % 64
                assert replay.sampler.tree.total()[i] == pytest.approx(replay.sampler.tree.get(
                    np.tile(slots, (2, 1)))[i].sum(), rel=1e-12)
            invalid_seen |= bool((v.size < 64).any() and replay.storage.added > 64)
    assert invalid_seen


@pytest.mark.parametrize("storage", ["transitions", "frames"])
def test_population_member_samples_what_a_solo_sampler_samples_and_state_round_trips(storage):
    traj = StackedTrajectory(np.random.default_rng(4), population=2)
    store = (lambda **kw: FrameStorage(**kw, n_step=3, gamma=0.9)) if storage == "frames" else \
        (lambda **kw: TransitionStorage(**kw, n_step=3, gamma=0.9))
    pop = Replay(50, 16, store, make_sampler, (K, H, W), np.uint8, [7, 8])
    solo = Replay(50, 16, store, make_sampler, (K, H, W), np.uint8, [8])
    copy = None
    for step in range(120):
        obs, a, r, nxt, term, trunc = traj.step()
        pop.add(obs, a, r, nxt, term, trunc)
        solo.add(obs[1:], a[1:], r[1:], nxt[1:], term[1:], trunc[1:])
        if step >= 10:
            p, s = pop.sample(), solo.sample()
            assert np.array_equal(p.indices[1], s.indices[0]) and torch.equal(p.weights[1], s.weights[0])
            assert torch.equal(p.obs[1], s.obs[0]) and torch.equal(p.discount[1], s.discount[0])
            td = torch.from_numpy(np.random.default_rng(step).normal(size=(2, 16))).float()
            pop.update_priorities(p.indices, td)
            solo.update_priorities(s.indices, td[1:])
        if step == 60:
            copy = Replay(50, 16, store, make_sampler, (K, H, W), np.uint8, [7, 8])
            copy.load_state_dict(pop.state_dict())
        elif copy is not None:
            copy.add(obs, a, r, nxt, term, trunc)
            c = copy.sample()
            assert np.array_equal(c.indices, p.indices) and torch.equal(c.weights, p.weights)
            copy.update_priorities(c.indices, td)


# -- real runs --------------------------------------------------------------------------------------------

def short(*extra, steps=400):
    return [f"total_steps={steps}", "learning_starts=100", "train_freq=1", "batch_size=16", "buffer_size=1000",
            "eval_every=200", "eval_episodes=2", "log_every=50", "target_sync=hard", "target_sync.every=20",
            "progress=false", "checkpoint_every=0", *extra]


def test_population_member_equals_solo_run(tmp_path):
    pop = train(make_cfg("replay=prioritized", *short("seed=5", "n_seeds=3")), tmp_path / "pop", "dqn")
    solo = train(make_cfg("replay=prioritized", *short("seed=6", "n_seeds=1")), tmp_path / "solo", "dqn")
    for name, drop in (("returns.csv", ("time",)), ("metrics.csv", ("time", "sps"))):
        rows_pop = [r for r in read_rows(tmp_path / "pop" / name, drop=drop) if r["seed"] == "6"]
        rows_solo = read_rows(tmp_path / "solo" / name, drop=drop)
        assert rows_pop == rows_solo and len(rows_solo) > 5, name
    for p_pop, p_solo in zip(pop.agent.q_net.parameters(), solo.agent.q_net.parameters()):
        assert torch.equal(p_pop[1], p_solo[0])
    assert np.array_equal(pop.replay.sampler.tree.tree[:, 1], solo.replay.sampler.tree.tree[:, 0])
    assert pop.replay.sampler.beta() == pytest.approx(1.0)  # annealed over exactly the run's 301 updates


def test_killed_prioritized_n_step_run_resumes_to_the_same_rows_and_weights(tmp_path, monkeypatch):
    args = ["replay=prioritized", "n_step=3", *short("n_seeds=2", steps=800), "checkpoint_every=300"]
    straight = train(make_cfg(*args), tmp_path / "straight", "dqn")

    def crash(metrics, step, seeds):
        if step >= 750:
            raise Killed
    monkeypatch.setattr(loop, "check_finite", crash)
    with pytest.raises(Killed):
        train(make_cfg(*args), tmp_path / "killed", "dqn")
    monkeypatch.undo()
    assert torch.load(tmp_path / "killed" / checkpoint.FILENAME, weights_only=True)["step"] == 600
    resumed = train(make_cfg(*args, "resume=true"), tmp_path / "killed", "dqn")
    same_results(tmp_path / "straight", tmp_path / "killed")
    same_weights(straight.agent.state_dict(), resumed.agent.state_dict())
    assert np.array_equal(straight.replay.sampler.tree.tree, resumed.replay.sampler.tree.tree)


@pytest.mark.parametrize("env", [["env=cartpole"], ["+experiment=minatar", "env.max_episode_steps=100"],
                                 ["+experiment=atari_nature", "env.num_threads=1", "eval_every=0",
                                  "replay/sampler=prioritized"]],
                         ids=["cartpole", "minatar", "atari-frames"])
def test_composed_prioritized_n_step_configs_train(tmp_path, env):
    replay = [] if "replay/sampler=prioritized" in env else ["replay=prioritized"]
    parts = train(make_cfg(*replay, "n_step=3", *short("n_seeds=2", steps=300), *env), tmp_path, "dqn")
    assert parts.state.step == 300 and parts.agent.updates == 201
    assert isinstance(parts.replay.sampler, PrioritizedSampler)
    assert isinstance(parts.replay.storage, FrameStorage if "atari" in env[0] else TransitionStorage)
    assert parts.replay.sampler.draws == 201 and len(parts.replay) == 298
    batch = parts.replay.sample()
    assert batch.weights is not None and batch.discount is not None and batch.weights.max() == 1.0
    metrics = pd.read_csv(tmp_path / "metrics.csv")
    assert metrics.loc[metrics.step >= 100, "loss"].notna().all()
