"""The loop's contract: truncation is not termination, the stored next state is the real one,
population members behave as solo runs, and runs are deterministic."""

import numpy as np
import pandas as pd
import pytest
import torch

from rlzoo.train import train

from conftest import read_rows


def test_truncation_bootstraps_and_final_obs_is_stored(cfg_factory, tmp_path):
    # Chain of 5 (the goal is 4 moves away) with a 6-step time limit and random actions: some episodes
    # reach the goal (terminated), the others are cut by the limit (truncated).
    cfg = cfg_factory("agent=qtable", "env=chain", "env.max_episode_steps=6", "buffer_size=600", "batch_size=1",
                      "total_steps=600", "eps_start=1.0", "eps_end=1.0", "eval_every=0", "progress=false")
    parts = train(cfg, tmp_path, "qtable", progress=False)
    r = parts.replay.storage
    obs, nxt = r.obs[0].numpy(), r.next_obs[0].numpy()
    term, rew = r.terminated[0].numpy(), r.reward[0].numpy()
    # terminal flag exactly where the goal was reached; truncated steps are stored as non-terminal
    assert np.array_equal(term == 1.0, nxt == 4) and term.sum() > 0
    assert np.array_equal(rew == 1.0, nxt == 4)
    # every stored transition is a real move on the chain (|s' - s| == 1, or staying at 0):
    # the stored s' of a truncated step is the last state, not the reset state 0
    moves = np.abs(nxt.astype(int) - obs.astype(int))
    assert np.all((moves == 1) | ((obs == 0) & (nxt == 0)))
    df = pd.read_csv(tmp_path / "returns.csv")
    # returns.csv marks the episodes cut by the limit: exactly those that did not reach the goal
    assert (df["truncated"] == 1).sum() > 0 and (df["truncated"] == 0).sum() > 0
    assert ((df["truncated"] == 1) == (df["return"] == 0)).all()
    assert (df.loc[df["truncated"] == 1, "length"] == 6).all()


def run_dqn(cfg_factory, path, seed, n_seeds, steps=600):
    cfg = cfg_factory("agent=double_dqn", f"seed={seed}", f"n_seeds={n_seeds}", f"total_steps={steps}",
                      "learning_starts=100", "eps_decay_fraction=0.5", "eval_every=300", "eval_episodes=2",
                      "log_every=50", "target_sync=hard", "target_sync.every=20", "batch_size=16", "buffer_size=1000", "progress=false")
    return train(cfg, path, "double_dqn", progress=False)


def test_population_member_equals_solo_run(cfg_factory, tmp_path):
    pop = run_dqn(cfg_factory, tmp_path / "pop", seed=5, n_seeds=3)
    solo = run_dqn(cfg_factory, tmp_path / "solo", seed=6, n_seeds=1)
    # same transitions (observations, actions, rewards, terminal flags) in the same order
    for key in ("obs", "action", "reward", "next_obs", "terminated"):
        assert torch.equal(getattr(pop.replay.storage, key)[1], getattr(solo.replay.storage, key)[0]), key
    # same episodes and evaluation returns
    rows_pop = [r for r in read_rows(tmp_path / "pop" / "returns.csv", drop=("time", "q_estimate", "mc_return", "agent"))
                if r["seed"] == "6"]
    rows_solo = read_rows(tmp_path / "solo" / "returns.csv", drop=("time", "q_estimate", "mc_return", "agent"))
    assert rows_pop == rows_solo and len(rows_solo) > 10
    # the same TD losses, Q estimates and weights, bit for bit: the numpy learner's arithmetic per member
    # does not depend on the population size
    m_pop = [r for r in read_rows(tmp_path / "pop" / "metrics.csv", drop=("time", "sps", "agent")) if r["seed"] == "6"]
    m_solo = read_rows(tmp_path / "solo" / "metrics.csv", drop=("time", "sps", "agent"))
    assert m_pop == m_solo and len(m_solo) == 12
    for p_pop, p_solo in zip(pop.agent.q_net.parameters(), solo.agent.q_net.parameters()):
        assert torch.equal(p_pop[1], p_solo[0])
    # and the other members really are different agents
    assert not torch.equal(pop.replay.storage.action[0], pop.replay.storage.action[1])


def test_same_seed_same_numbers(cfg_factory, tmp_path):
    run_dqn(cfg_factory, tmp_path / "a", seed=0, n_seeds=2, steps=400)
    run_dqn(cfg_factory, tmp_path / "b", seed=0, n_seeds=2, steps=400)
    for name in ("returns.csv", "metrics.csv"):
        a, b = read_rows(tmp_path / "a" / name), read_rows(tmp_path / "b" / name)
        assert a == b and len(a) > 5
    run_dqn(cfg_factory, tmp_path / "c", seed=1, n_seeds=2, steps=400)
    assert read_rows(tmp_path / "c" / "metrics.csv") != read_rows(tmp_path / "a" / "metrics.csv")


def test_numpy_cartpole_reproduces_gymnasium_cartpole(cfg_factory, tmp_path):
    """env=cartpole (one numpy step for all members) gives the same run as gymnasium's CartPole-v1."""
    common = ["agent=dqn", "n_seeds=2", "total_steps=800", "learning_starts=100", "eval_every=400",
              "eval_episodes=2", "batch_size=16", "log_every=100", "progress=false"]
    train(cfg_factory(*common, "env=cartpole"), tmp_path / "np", "dqn", progress=False)
    train(cfg_factory(*common, "env=gym", "env.id=CartPole-v1"), tmp_path / "gym", "dqn", progress=False)
    for name in ("returns.csv", "metrics.csv"):
        a, b = read_rows(tmp_path / "np" / name), read_rows(tmp_path / "gym" / name)
        assert a == b and len(a) > 10


@pytest.mark.parametrize("members", [1, 6])
def test_population_cartpole_matches_gymnasium_step_by_step(members):
    import gymnasium as gym

    from rlzoo.envs.cartpole import CartPolePopulation

    pop = CartPolePopulation(members)
    seeds = [7 + i for i in range(members)]
    obs, _ = pop.reset(seed=seeds)
    refs = [gym.make("CartPole-v1") for _ in range(members)]
    assert np.array_equal(obs, np.stack([e.reset(seed=s)[0] for s, e in zip(seeds, refs)]))
    rng, episodes, truncations = np.random.default_rng(0), 0, 0
    for _ in range(3000):
        # mostly "push right when the pole leans right": long episodes, some reach the 500-step limit
        actions = np.where(rng.random(members) < 0.1, rng.integers(0, 2, members), (obs[:, 2] + obs[:, 3] > 0))
        obs, reward, terminated, truncated, info = pop.step(actions)
        truncations += int(truncated.sum())
        for i, env in enumerate(refs):
            o, r, te, tr, _ = env.step(int(actions[i]))
            assert (te, tr and not te, r) == (terminated[i], truncated[i], reward[i])
            if te or tr:
                episodes += 1
                assert np.array_equal(info["final_obs"][i], o)
                o, _ = env.reset()
            assert np.array_equal(obs[i], o)
    assert episodes > 5 and truncations > 0, (episodes, truncations)


def test_value_estimate_uses_only_states_far_from_a_time_limit_cut():
    from rlzoo.loop import value_estimate_vs_return

    # terminated: every state counts; G = [1 + 0.5 * 2, 2] = [2, 2]
    out = value_estimate_vs_return([3.0, 5.0], [1.0, 2.0], 0.5, cut=False)
    assert out == {"q_estimate": 4.0, "mc_return": 2.0}
    # cut by a time limit with gamma 0.5: the tail weight 0.5 ** k < 0.01 needs k >= 7 steps, so of an
    # 8-step episode only the first state counts
    out = value_estimate_vs_return([9.0] + [0.0] * 7, [1.0] * 8, 0.5, cut=True)
    assert out["q_estimate"] == 9.0 and out["mc_return"] == pytest.approx(sum(0.5 ** k for k in range(8)))
    out = value_estimate_vs_return([1.0] * 7, [1.0] * 7, 0.5, cut=True)
    assert np.isnan(out["q_estimate"]) and np.isnan(out["mc_return"])


def test_gradient_steps_and_the_learning_rate_schedule(cfg_factory, tmp_path):
    """``gradient_steps=k`` makes k updates at every ``train_freq``-th step; with ``lr_end`` the learning rate
    falls linearly from ``lr`` and is ``lr_end`` after the run's last update."""
    args = ("n_seeds=2", "total_steps=400", "learning_starts=100", "eval_every=0", "log_every=100", "progress=false",
            "checkpoint_every=0", "batch_size=8", "lr=0.001")
    burst = train(cfg_factory(*args, "train_freq=8", "gradient_steps=4", "lr_end=0.0002"), tmp_path / "burst", "dqn")
    assert burst.agent.updates == 4 * (400 // 8 - 99 // 8)  # steps 104, 112, ..., 400
    assert burst.agent.optimizer.param_groups[0]["lr"] == pytest.approx(0.0002)
    rows = pd.read_csv(tmp_path / "burst" / "metrics.csv")
    # updates at steps 104, 112, ...: 0 by step 100, then 4 for each multiple of 8 up to the row's step
    assert rows.groupby("step")["updates"].first().to_dict() == {100: 0, 200: 4 * 13, 300: 4 * 25, 400: 4 * 38}
    constant = train(cfg_factory(*args, "train_freq=2", "lr_end=null"), tmp_path / "constant", "dqn")
    assert constant.agent.updates == 400 // 2 - 99 // 2
    assert constant.agent.optimizer.param_groups[0]["lr"] == 0.001
    decayed = train(cfg_factory(*args, "train_freq=2", "lr_end=0.0"), tmp_path / "decayed", "dqn")
    assert decayed.agent.optimizer.param_groups[0]["lr"] == pytest.approx(0.0, abs=1e-12)


def test_learning_starts_zero_learns_from_the_first_update_step(cfg_factory, tmp_path):
    """rl-baselines3-zoo's ``learning_starts=0``: an update at every ``train_freq``-th step from the start,
    epsilon following its schedule from step 1."""
    cfg = cfg_factory("learning_starts=0", "train_freq=4", "total_steps=200", "eval_every=0", "log_every=100",
                      "progress=false", "checkpoint_every=0", "batch_size=8", "eps_decay_fraction=0.5")
    run = train(cfg, tmp_path, "dqn")
    assert run.agent.updates == 200 // 4
    eps = pd.read_csv(tmp_path / "metrics.csv").groupby("step")["epsilon"].first()
    assert eps[100] == pytest.approx(1.0 + (0.04 - 1.0) * 100 / 100)
