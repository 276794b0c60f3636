"""Maximisation bias: the MDP of Sutton and Barto's Example 6.7 (``env=maxbias``), acting among legal actions,
Double Q-learning's behaviour on it (``agent=double_qtable``), the size of Q-learning's bias against van Hasselt
et al. 2016's Theorem 1 on a noisy bandit, and the analysis script (``analysis.maxbias``)."""

from __future__ import annotations

import math

import gymnasium as gym
import numpy as np
import pandas as pd
import pytest
import torch

from conftest import read_rows
from rlzoo import loop
from rlzoo.envs import MaxBiasMDP, make_gym_env
from rlzoo.io import checkpoint
from rlzoo.train import train

# The book's settings (Sutton and Barto 2018, Figure 6.5 and its text): epsilon = 0.1, alpha = 0.1, gamma = 1,
# Q initialised to 0, ties broken at random (the loop does), learning from the first step.
BOOK = ["env=maxbias", "gamma=1.0", "lr=0.1", "eps_start=0.1", "eps_end=0.1", "learning_starts=0", "eval_every=0",
        "checkpoint_every=0", "progress=false"]


# -- the environment -------------------------------------------------------------------------------------------
def test_maxbias_dynamics_and_legal_actions():
    env = gym.make("rlzoo/MaxBias-v0", actions_b=4)
    obs, info = env.reset(seed=0)
    assert obs == MaxBiasMDP.A and info["action_mask"].tolist() == [1, 1, 0, 0]
    assert info["action_mask"].dtype == np.int8  # gymnasium's convention (Taxi)
    assert env.step(MaxBiasMDP.RIGHT)[:4] == (MaxBiasMDP.TERMINAL, 0.0, True, False)
    env.reset()
    obs, reward, terminated, truncated, info = env.step(MaxBiasMDP.LEFT)
    assert (obs, reward, terminated, truncated) == (MaxBiasMDP.B, 0.0, False, False)
    assert info["action_mask"].tolist() == [1, 1, 1, 1]
    obs, reward, terminated, _, _ = env.step(3)
    assert obs == MaxBiasMDP.TERMINAL and terminated and reward != 0.0
    env.reset()
    with pytest.raises(ValueError, match="state A has two actions"):
        env.step(2)
    with pytest.raises(ValueError, match="actions_b must be a whole number >= 2"):
        MaxBiasMDP(actions_b=1)


def test_maxbias_rewards_in_b_are_normal_with_the_books_mean_and_variance():
    """20,000 rewards from B: mean within 4 standard errors of -0.1 (SE 1/sqrt(n)), variance within 4 SE of 1
    (the sample variance of normal data has SE sqrt(2 / (n - 1)))."""
    env = MaxBiasMDP()
    env.reset(seed=1)
    rewards = []
    for i in range(20_000):
        env.reset()
        env.step(MaxBiasMDP.LEFT)
        rewards.append(env.step(i % 10)[1])
    r, n = np.array(rewards), len(rewards)
    assert abs(r.mean() + 0.1) < 4 / math.sqrt(n)
    assert abs(r.var(ddof=1) - 1.0) < 4 * math.sqrt(2 / (n - 1))


def test_population_reports_the_legal_actions_of_each_members_state():
    envs, spec = make_gym_env("rlzoo/MaxBias-v0", 2, kwargs={"actions_b": 3})
    assert spec.num_actions == 3 and spec.num_states == 3
    _, info = envs.reset(seed=[0, 1])
    assert info["action_mask"].tolist() == [[1, 1, 0], [1, 1, 0]]
    obs, _, terminated, _, info = envs.step(np.array([MaxBiasMDP.LEFT, MaxBiasMDP.RIGHT]))
    # member 0 is in B; member 1 ended its episode and was reset to A in the same step
    assert obs.tolist() == [1, 0] and terminated.tolist() == [False, True]
    assert info["action_mask"].tolist() == [[1, 1, 1], [1, 1, 0]]


# -- acting among legal actions ----------------------------------------------------------------------------------
class Table:
    def __init__(self, q):
        self.q = np.asarray(q, dtype=np.float64)

    def q_values(self, obs):
        return self.q


def test_masked_epsilon_greedy_explores_and_maximises_over_legal_actions_only():
    q = [[0.0, 1.0, 9.0, 9.0], [2.0, 2.0, 2.0, 7.0]]
    legal = np.array([[1, 1, 0, 0], [1, 1, 1, 0]], dtype=np.int8)
    rngs = [np.random.default_rng(0), np.random.default_rng(1)]
    actions, max_q = loop.epsilon_greedy(Table(q), None, 0.0, rngs, 4, legal=legal)
    assert actions[0] == 1 and max_q.tolist() == [1.0, 2.0]  # the illegal 9s and 7 are never chosen or reported
    greedy = [int(loop.epsilon_greedy(Table(q), None, 0.0, rngs, 4, legal=legal)[0][1]) for _ in range(3000)]
    counts = np.bincount(greedy, minlength=4)  # a three-way tie among the legal actions, broken at random
    assert counts[3] == 0 and all(abs(c - 1000) < 4 * math.sqrt(3000 * (1 / 3) * (2 / 3)) for c in counts[:3])
    explored = np.array([loop.epsilon_greedy(Table(q), None, 1.0, rngs, 4, legal=legal)[0] for _ in range(4000)])
    assert set(explored[:, 0]) == {0, 1} and set(explored[:, 1]) == {0, 1, 2}
    n0 = (explored[:, 0] == 0).sum()  # binomial(4000, 1/2): within 4 standard deviations
    assert abs(n0 - 2000) < 4 * math.sqrt(4000 / 4)


def test_all_legal_mask_draws_exactly_what_the_unmasked_rule_draws():
    q = [[0.0, 1.0, 1.0], [3.0, 2.0, 1.0], [0.5, 0.5, 0.5]]
    a_rngs = [np.random.default_rng(s) for s in range(3)]
    b_rngs = [np.random.default_rng(s) for s in range(3)]
    for eps in (0.0, 0.3, 1.0):
        for _ in range(200):
            plain = loop.epsilon_greedy(Table(q), None, eps, a_rngs, 3, need_q=True)
            masked = loop.epsilon_greedy(Table(q), None, eps, b_rngs, 3, need_q=True, legal=np.ones((3, 3)))
            assert plain[0].tolist() == masked[0].tolist() and plain[1].tolist() == masked[1].tolist()


# -- Double Q-learning on the MDP: member = solo run, resume -------------------------------------------------------
def test_double_qtable_member_equals_solo_run_on_maxbias(cfg_factory, tmp_path):
    run = ["agent=double_qtable", *BOOK, "total_steps=300", "log_every=50"]
    pop = train(cfg_factory(*run, "n_seeds=3", "seed=10"), tmp_path / "pop", "double_qtable", progress=False)
    solo = train(cfg_factory(*run, "n_seeds=1", "seed=11"), tmp_path / "solo", "double_qtable", progress=False)
    for name in ("returns.csv", "metrics.csv"):
        rows = [r for r in read_rows(tmp_path / "pop" / name) if r["seed"] == "11"]
        assert len(rows) >= 6 and rows == read_rows(tmp_path / "solo" / name), name
    assert torch.equal(pop.agent.q[1], solo.agent.q[0]) and torch.equal(pop.agent.q2[1], solo.agent.q2[0])
    lengths = [int(r["length"]) for r in read_rows(tmp_path / "solo" / "returns.csv")]
    assert set(lengths) == {1, 2}  # both ways out of A were taken, and no illegal action ended the run


def test_double_qtable_killed_and_resumed_on_maxbias_equals_a_straight_run(cfg_factory, tmp_path, monkeypatch):
    """The tables, the coins' streams, the environments' reward streams and the legal actions all continue."""
    run = ["agent=double_qtable", *BOOK, "total_steps=400", "n_seeds=2", "log_every=50"]
    straight = train(cfg_factory(*run), tmp_path / "straight", "double_qtable", progress=False)

    class Killed(Exception):
        pass

    def crash(metrics, step, seeds):
        if step >= 330:
            raise Killed
    monkeypatch.setattr(loop, "check_finite", crash)
    with pytest.raises(Killed):
        train(cfg_factory(*run, "checkpoint_every=100"), tmp_path / "killed", "double_qtable", progress=False)
    monkeypatch.undo()
    resumed = train(cfg_factory(*run, "checkpoint_every=100", "resume=true"), tmp_path / "killed", "double_qtable",
                    progress=False)
    for name in ("returns.csv", "metrics.csv"):
        assert read_rows(tmp_path / "straight" / name) == read_rows(tmp_path / "killed" / name), name
    a, b = straight.agent.state_dict(), resumed.agent.state_dict()
    assert torch.equal(a["q"], b["q"]) and torch.equal(a["q2"], b["q2"])
    assert a["rngs"] == b["rngs"] and a["updates"] == b["updates"]
    assert checkpoint.FILENAME in {p.name for p in (tmp_path / "killed").iterdir()}


# -- the figure's direction, in a few seconds ----------------------------------------------------------------------
def _left_shares(path, first: int, last: int) -> np.ndarray:
    """Per seed: the fraction of training episodes first..last that went left from A (length 2)."""
    df = pd.read_csv(path / "returns.csv")
    df = df[(df.phase == "train") & df.episode.between(first, last)]
    assert (df.groupby("seed").size() == last - first + 1).all()
    return (df.length == 2).groupby(df.seed).mean().to_numpy()


def test_q_learning_goes_left_far_more_than_double_q_learning_early_on(cfg_factory, tmp_path):
    """Figure 6.5's claim with 60 seeds and 200 steps (>= 100 episodes each): over episodes 11-50, Q-learning goes
    left more often than Double Q-learning and more often than the 5% optimum, each by more than 4 standard
    errors of the difference (seeds are independent)."""
    shares = {}
    for agent in ("qtable", "double_qtable"):
        train(cfg_factory(f"agent={agent}", *BOOK, "n_seeds=60", "total_steps=200"), tmp_path / agent, agent,
              progress=False)
        shares[agent] = _left_shares(tmp_path / agent, 11, 50)
    q, dq = shares["qtable"], shares["double_qtable"]
    se = math.sqrt(q.var(ddof=1) / len(q) + dq.var(ddof=1) / len(dq))
    assert q.mean() - dq.mean() > 4 * se, (q.mean(), dq.mean(), se)
    assert q.mean() - 0.05 > 4 * q.std(ddof=1) / math.sqrt(len(q))


# -- Theorem 1 of van Hasselt et al. 2016 on a noisy bandit --------------------------------------------------------
EXPECTED_MAX = {2: 0.564, 4: 1.029, 8: 1.424, 16: 1.766, 32: 2.07}  # E[max of m N(0, 1)], as the paper rounds them


def expected_max_of_normals(m: int) -> float:
    """``E[max of m independent N(0, 1)] = int x m phi(x) Phi(x)^(m-1) dx``, by the trapezoidal rule."""
    x = np.linspace(-12.0, 12.0, 24_001)
    phi = np.exp(-x * x / 2) / math.sqrt(2 * math.pi)
    cdf = np.array([0.5 * math.erfc(-v / math.sqrt(2)) for v in x])
    y = x * m * phi * cdf ** (m - 1)
    return float(((y[1:] + y[:-1]) / 2 * np.diff(x)).sum())


def test_expected_maximum_of_normals_matches_the_papers_numbers():
    for m, value in EXPECTED_MAX.items():
        assert expected_max_of_normals(m) == pytest.approx(value, abs=1.5e-3)
    assert expected_max_of_normals(2) == pytest.approx(1 / math.sqrt(math.pi), abs=1e-6)  # closed form for m = 2


def _bandit_overestimation(cfg_factory, tmp_path, agent: str, m: int, alpha: float, members: int, samples: int):
    """Train ``agent`` on an m-armed bandit (every reward N(0, 1)) with uniform behaviour, and return per member
    the mean over its episodes after a burn-in of the logged ``q_estimate - mc_return`` and ``q_estimate``."""
    burn_in = 10 * m  # about 10 updates of every action: the variance still missing is (1 - alpha)^(2 * 10) of it
    cfg = cfg_factory(f"agent={agent}", "env=bandit", f"env.kwargs.actions={m}", f"lr={alpha}", "eps_start=1.0",
                      "eps_end=1.0", "learning_starts=0", f"total_steps={burn_in + samples}", f"n_seeds={members}",
                      "eval_every=0", "checkpoint_every=0", "log_q_estimates=true", "progress=false")
    train(cfg, tmp_path, agent, progress=False)
    df = pd.read_csv(tmp_path / "returns.csv")
    df = df[(df.phase == "train") & (df.step > burn_in)]
    assert (df.length == 1).all() and len(df) == members * samples
    over = (df.q_estimate - df.mc_return).groupby(df.seed).mean().to_numpy()
    return over, df.q_estimate.groupby(df.seed).mean().to_numpy()


@pytest.mark.parametrize("m", sorted(EXPECTED_MAX))
def test_q_table_overestimation_on_a_noisy_bandit_matches_theorem_1(cfg_factory, tmp_path, m):
    """Q-learning's logged overestimation on a one-step bandit is E[max of m N(0, 1)] times the stationary
    standard deviation of a constant-step-size estimate.

    The bandit: one state, m actions, every reward N(0, sigma^2) (sigma = 1), episodes of one step, so every true
    value is 0 and ``max_a Q(a)`` overestimates by its whole value. With a constant step size alpha, an action's
    estimate after its n-th update is ``Q_n = (1 - alpha) Q_(n-1) + alpha r_n
    = (1 - alpha)^n Q_0 + alpha sum_(k<n) (1 - alpha)^k r_(n-k)``: with Q_0 = 0 a sum of independent normals,
    normal with mean 0 and variance ``alpha^2 sigma^2 (1 - (1 - alpha)^(2n)) / (1 - (1 - alpha)^2)``, which tends
    to ``s^2 = sigma^2 alpha / (2 - alpha)``. Different actions' estimates are built from different rewards, so
    they are independent. Behaviour is uniform (epsilon = 1): which action is updated never depends on the
    estimates. So at any step past the burn-in, ``max_a Q(a)`` is the maximum of m independent N(0, s^2) values,
    whose mean is ``c_m s`` with c_m = 0.564, 1.029, 1.424, 1.766, 2.07 for m = 2, 4, 8, 16, 32 (van Hasselt et al.
    2016, Theorem 1 and its Figure 1). The loop logs per episode ``q_estimate = max_a Q(a)`` at the step, before
    the update, and ``mc_return = r``, independent of it with mean 0: both ``q_estimate`` and the logged
    overestimation ``q_estimate - mc_return`` have mean ``c_m s``.

    The tolerance is 4 standard errors of the mean over members: members are independent, so each member's mean
    over its episodes is one independent sample (the episodes within a member are correlated through the slowly
    changing table, which the spread across members accounts for). alpha = 0.5 keeps that correlation short
    (an estimate forgets half of itself at each of its updates), s = sigma / sqrt(3). The burn-in leaves a
    variance deficit of about (1 - alpha)^20 ~ 1e-6, far inside the tolerance.
    """
    alpha, sigma = 0.5, 1.0
    s = sigma * math.sqrt(alpha / (2 - alpha))
    expected = EXPECTED_MAX[m] * s
    over, q_est = _bandit_overestimation(cfg_factory, tmp_path, "qtable", m, alpha, members=50, samples=200)
    for x in (over, q_est):
        se = x.std(ddof=1) / math.sqrt(len(x))
        assert abs(x.mean() - expected) < 4 * se, (m, x.mean(), expected, se)
        assert se < 0.05 * expected  # the test can tell c_m s from, e.g., c_m sigma or c_(m/2) s
    # with the step size's factor left out the prediction is far off: the check has power
    assert abs(over.mean() - EXPECTED_MAX[m] * sigma) > 8 * over.std(ddof=1) / math.sqrt(len(over))


def test_double_q_table_acts_on_a_mean_whose_overestimation_is_smaller_by_sqrt_2(cfg_factory, tmp_path):
    """Each of Double Q-learning's tables follows the same recursion over its own (disjoint) share of the
    rewards, so each has stationary variance s^2 and the two are independent: their mean, which the agent acts
    on and logs, has variance s^2 / 2, and on the bandit its logged overestimation is ``c_m s / sqrt(2)``. (A
    bandit has no bootstrapping, where Double Q-learning removes the bias of the target; this checks its
    estimates' noise.) Tolerance: 4 standard errors over independent members, as above."""
    m, alpha = 8, 0.5
    expected = EXPECTED_MAX[m] * math.sqrt(alpha / (2 - alpha)) / math.sqrt(2)
    over, _ = _bandit_overestimation(cfg_factory, tmp_path, "double_qtable", m, alpha, members=50, samples=250)
    se = over.std(ddof=1) / math.sqrt(len(over))
    assert abs(over.mean() - expected) < 4 * se, (over.mean(), expected, se)


# -- the analysis script -------------------------------------------------------------------------------------------
def test_wilson_interval_hand_values():
    from analysis.maxbias import wilson_interval

    low, high = wilson_interval(np.array([0, 5, 10]), np.array([10, 10, 10]))
    # 0 of 10: [0, z^2 / (n + z^2)]; 5 of 10: symmetric about 0.5; 10 of 10 mirrors 0 of 10
    z2 = 1.959963984540054 ** 2
    assert low[0] == pytest.approx(0.0, abs=1e-12) and high[0] == pytest.approx(z2 / (10 + z2))
    assert low[1] == pytest.approx(0.2366, abs=5e-4) and high[1] == pytest.approx(0.7634, abs=5e-4)  # published
    assert low[2] == pytest.approx(1 - high[0]) and high[2] == pytest.approx(1.0)


def test_left_curve_and_windows_from_episode_lengths():
    from analysis.maxbias import left_curve, left_matrix, window_table

    rows = []
    for seed, lengths in enumerate([[2, 2, 1, 1], [2, 1, 1, 1], [1, 1, 1, 2]]):
        rows += [dict(label="qtable", unit=f"r#{seed}", phase="train", episode=k + 1, length=n)
                 for k, n in enumerate(lengths)]
    rows.append(dict(label="qtable", unit="r#9", phase="train", episode=1, length=2))  # too few episodes: left out
    with pytest.warns(UserWarning, match="1 of 4 seeds have fewer than 4"):
        matrices = left_matrix(pd.DataFrame(rows), episodes=4)
    curve = left_curve(matrices)
    assert curve["left_pct"].tolist() == pytest.approx([200 / 3, 100 / 3, 0.0, 100 / 3])
    assert (curve["seeds"] == 3).all() and (curve["ci_low"] <= curve["left_pct"]).all()
    table = window_table(matrices, windows=((1, 2), (3, 4)))
    assert table.loc[0, "left_pct_1_2"] == pytest.approx(50.0) and table.loc[0, "left_pct_3_4"] == pytest.approx(100 / 6)
    assert table.loc[0, "peak_left_pct"] == pytest.approx(200 / 3) and table.loc[0, "peak_episode"] == 1


def test_overestimation_table_is_the_mean_over_seeds_of_each_seeds_window_mean():
    from analysis.maxbias import overestimation_table

    rows = [dict(label="qtable", unit=f"r#{seed}", phase="train", episode=k, q_estimate=q, mc_return=g)
            for seed, values in enumerate([[(1.0, 0.0), (0.5, 0.5)], [(0.2, -0.2), (0.0, 0.0)]])
            for k, (q, g) in enumerate(values, start=1)]
    table = overestimation_table(pd.DataFrame(rows), episodes=2, windows=((1, 1), (1, 2)))
    assert table.loc[0, "over_1_1"] == pytest.approx((1.0 + 0.4) / 2)  # seed 0: 1.0, seed 1: 0.4
    assert table.loc[0, "over_1_2"] == pytest.approx((0.5 + 0.2) / 2)  # seed means 0.5 and 0.2
