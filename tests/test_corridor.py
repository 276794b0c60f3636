"""The corridor (Wang et al. 2016, section 4.1), exact policy evaluation by dynamic programming, the Expected-SARSA
target, and policy evaluation with a population of Q-networks (rlzoo.policy_evaluation)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from rlzoo.envs import make_gym_env
from rlzoo.envs.corridor import Corridor, TabularModel
from rlzoo.errors import ConfigError
from rlzoo.policy_evaluation import (FixedPolicy, PolicyEvaluation, QErrorProbe, epsilon_greedy_probs, optimal_q,
                                     policy_q)
from rlzoo.targets import expected_sarsa_target
from rlzoo.train import train

UP, DOWN, LEFT, RIGHT, NOOP = 0, 1, 2, 3, 4


def walk(env: Corridor, actions):
    """Positions, rewards and terminations after each action."""
    out = []
    for a in actions:
        _, r, term, trunc, _ = env.step(a)
        out.append(((env.x, env.y), r, term))
    return out


# ---- the environment ---------------------------------------------------------------------------------------------

def test_layout_sizes_start_and_observation():
    env = Corridor()
    obs, _ = env.reset(seed=0)
    assert (env.x, env.y) == (1, 0)  # bottom left
    assert env.width == 50 and env.height == 21
    np.testing.assert_allclose(obs, [1 / 49, 0.0])
    m = env.model()
    assert m.num_states == 70 and m.num_actions == 5  # 10 + 50 + 10 cells
    assert [m.cells[i] for i in np.flatnonzero(m.absorbing)] == [(0, 10), (49, 20)]
    np.testing.assert_allclose(m.observations[m.cells.index((49, 20))], [1.0, 1.0])  # goal: top right


def test_dynamics_and_rewards_by_hand():
    env = Corridor(vertical=2, horizontal=4)  # cells: (1,0) (1,1) | (0,2) (1,2) (2,2) (3,2) | (3,3) (3,4)
    env.reset()
    # walls: left, right and down at the start leave the agent in place
    assert walk(env, [LEFT, RIGHT, DOWN]) == [((1, 0), 0.0, False)] * 3
    assert walk(env, [UP, UP, RIGHT, RIGHT, UP, UP]) == [
        ((1, 1), 0.0, False), ((1, 2), 0.0, False), ((2, 2), 0.0, False), ((3, 2), 0.0, False),
        ((3, 3), 0.0, False), ((3, 4), 1.0, True)]  # the goal, top right: the largest reward, and the end
    env.reset()
    assert walk(env, [UP, UP, UP, LEFT]) == [((1, 1), 0.0, False), ((1, 2), 0.0, False), ((1, 2), 0.0, False),
                                              ((0, 2), 0.1, True)]  # up into the ceiling; the side dead end


def test_extra_actions_are_no_ops():
    env = Corridor(n_actions=20, vertical=2, horizontal=4)
    env.reset()
    env.step(UP)
    for a in range(4, 20):
        obs, r, term, trunc, _ = env.step(a)
        assert (env.x, env.y) == (1, 1) and r == 0.0 and not term and not trunc
    m = env.model()
    assert m.num_actions == 20
    np.testing.assert_array_equal(m.next_state[:, 4:], np.repeat(np.arange(m.num_states)[:, None], 16, axis=1))
    with pytest.raises(ValueError, match="action must be in"):
        env.step(20)


def test_index_observations_and_state_of():
    env = Corridor(observation="index", vertical=2, horizontal=4)
    obs, _ = env.reset()
    assert obs == 0 and env.observation_space.n == 8
    m = env.model()
    np.testing.assert_array_equal(m.state_of(m.observations), np.arange(8))
    xy = Corridor(vertical=2, horizontal=4).model()
    np.testing.assert_array_equal(xy.state_of(xy.observations[None, ::-1]), np.arange(8)[None, ::-1])


def test_bad_arguments_name_the_key():
    with pytest.raises(ValueError, match="env.kwargs.n_actions must be a whole number >= 5"):
        Corridor(n_actions=4)
    with pytest.raises(ValueError, match=r"env.kwargs.observation must be one of \['xy', 'index'\]"):
        Corridor(observation="pixels")


def test_population_state_dict_continues_the_episode():
    envs, spec = make_gym_env("rlzoo/Corridor-v0", 2, kwargs={"n_actions": 10})
    assert spec.num_actions == 10 and spec.obs_shape == (2,)
    envs.reset(seed=[0, 1])
    envs.step(np.array([UP, RIGHT]))
    state = envs.state_dict()
    assert envs.exact_state
    a, *_ = envs.step(np.array([UP, UP]))
    envs.load_state_dict(state)
    b, *_ = envs.step(np.array([UP, UP]))
    np.testing.assert_array_equal(a, b)


# ---- exact values by dynamic programming -------------------------------------------------------------------------

def tiny():
    """vertical=1, horizontal=3: start A=(1,0), B=(1,1) the junction, side S=(0,1) (0.1), C=(2,1), goal G=(2,2) (1)."""
    return Corridor(vertical=1, horizontal=3).model()


def test_optimal_q_on_a_tiny_corridor_by_hand():
    m, g = tiny(), 0.5
    A, S, B, C, G = (m.cells.index(c) for c in [(1, 0), (0, 1), (1, 1), (2, 1), (2, 2)])
    q = optimal_q(m, g)
    # V*(C) = 1 (up into the goal); V*(B) = max(0.1 left, g * 1 right) = 0.5; V*(A) = g * V*(B) = 0.25
    np.testing.assert_allclose(q[C], [1.0, g * 1.0, g * 0.5, g * 1.0, g * 1.0])
    np.testing.assert_allclose(q[B], [g * 0.5, g * 0.25, 0.1, g * 1.0, g * 0.5])
    np.testing.assert_allclose(q[A], [g * 0.5, g * 0.25, g * 0.25, g * 0.25, g * 0.25])
    np.testing.assert_array_equal(q[[S, G]], 0.0)


def test_policy_q_of_the_greedy_policy_on_a_tiny_corridor_by_hand():
    m, g = tiny(), 0.5
    A, B, C = (m.cells.index(c) for c in [(1, 0), (1, 1), (2, 1)])
    probs = epsilon_greedy_probs(optimal_q(m, g), 0.0)
    np.testing.assert_array_equal(probs.argmax(axis=1)[[A, B, C]], [UP, RIGHT, UP])
    np.testing.assert_allclose(policy_q(m, probs, g), optimal_q(m, g), atol=1e-12)  # pi greedy: Q^pi = Q*


def test_policy_q_with_exploration_by_hand():
    # One state s: action 0 ends the episode with reward 1, action 1 stays (reward 0); pi(0) = p.
    # V = p + (1 - p) g V  ->  V = p / (1 - (1 - p) g);  Q(s, 0) = 1, Q(s, 1) = g V.
    m = TabularModel(next_state=np.array([[1, 0], [1, 1]]), reward=np.array([[1.0, 0.0], [0.0, 0.0]]),
                     terminal=np.array([[True, False], [False, False]]), absorbing=np.array([False, True]),
                     observations=np.array([0, 1]), observation="index", width=2, height=1, cells=((0, 0), (1, 0)))
    p, g = 0.3, 0.9
    q = policy_q(m, np.array([[p, 1 - p], [0.5, 0.5]]), g)
    v = p / (1 - (1 - p) * g)
    np.testing.assert_allclose(q, [[1.0, g * v], [0.0, 0.0]])
    # epsilon-greedy around the first maximum: epsilon/A everywhere plus 1 - epsilon on the greedy action
    np.testing.assert_allclose(epsilon_greedy_probs(np.array([[1.0, 3.0, 3.0]]), 0.3), [[0.1, 0.8, 0.1]])


def test_policy_q_satisfies_the_bellman_equation_on_the_paper_corridor():
    m, g = Corridor(n_actions=10).model(), 0.99
    probs = epsilon_greedy_probs(optimal_q(m, g), 0.001)
    q = policy_q(m, probs, g)
    v = (probs * q).sum(axis=1)
    bellman = m.reward + g * (~m.terminal) * v[m.next_state]
    live = ~m.absorbing
    np.testing.assert_allclose(q[live], bellman[live], atol=1e-12)
    start = m.cells.index((1, 0))
    assert 0.5 < q[start].max() < 0.99 ** 66  # 67 moves to the goal, and a little lost to exploration
    # no-ops are worth exactly gamma * V(s): they all have the same value
    np.testing.assert_allclose(q[live, 4:], g * v[live, None].repeat(6, axis=1), atol=1e-12)


# ---- the Expected-SARSA target and the fixed policy --------------------------------------------------------------

def test_expected_sarsa_target_by_hand():
    r = torch.tensor([[1.0, 0.0], [0.5, 2.0]])
    term = torch.tensor([[0.0, 1.0], [0.0, 0.0]])
    q_next = torch.tensor([[[2.0, 4.0], [5.0, 5.0]], [[1.0, 3.0], [0.0, 10.0]]])
    probs = torch.tensor([[[0.5, 0.5], [1.0, 0.0]], [[0.25, 0.75], [0.9, 0.1]]])
    y = expected_sarsa_target(r, term, 0.9, q_next, probs)
    # [1 + 0.9 * 3, 0 (terminal)], [0.5 + 0.9 * 2.5, 2 + 0.9 * 1]
    assert torch.allclose(y, torch.tensor([[3.7, 0.0], [2.75, 2.9]]))


def test_fixed_policy_draws_from_pi_with_each_members_generator():
    m = Corridor(n_actions=5, vertical=2, horizontal=4).model()
    probs = np.tile([0.1, 0.2, 0.3, 0.4, 0.0], (m.num_states, 1))
    pi = FixedPolicy(probs, m.state_of)
    rngs = [np.random.default_rng(s) for s in range(2)]
    obs = m.observations[[0, 3]]
    counts = np.zeros((2, 5))
    for _ in range(20000):
        actions, max_q = pi(None, obs, 0.5, rngs, 5)
        counts[np.arange(2), actions] += 1
    assert max_q is None
    np.testing.assert_allclose(counts / 20000, np.tile(probs[0], (2, 1)), atol=0.012)
    pair = [np.random.default_rng(s) for s in (0, 1)]
    alone = [np.random.default_rng(1)]
    for _ in range(50):  # member 1 of a pair draws exactly what a solo member with its generator draws
        assert pi(None, obs, 0.0, pair, 5)[0][1] == pi(None, obs[1:], 0.0, alone, 5)[0][0]
    nxt = torch.as_tensor(m.observations[[[0, 1], [2, 3]]])
    assert pi.next_probs(nxt).shape == (2, 2, 5)


def test_probe_measures_squared_error_against_the_true_values(tmp_path):
    class Fake:
        updates = 7

        def q_table(self, obs):
            return np.stack([np.zeros((len(obs), 2)), np.ones((len(obs), 2))])  # member 0 all 0, member 1 all 1

    q_true = np.array([[1.0, 2.0], [0.0, 0.5]])
    probe = QErrorProbe(10, np.zeros((2, 2)), q_true, tmp_path, "a", "e", [3, 4])
    probe(Fake(), 5)  # not a multiple of every: nothing
    probe(Fake(), 10)
    probe.close()
    rows = pd.read_csv(tmp_path / "q_error.csv")
    assert rows.step.tolist() == [10, 10] and rows.seed.tolist() == [3, 4] and rows.updates.tolist() == [7, 7]
    # member 0: 1 + 4 + 0 + 0.25 = 5.25; member 1: 0 + 1 + 1 + 0.25 = 2.25; mse = se / 4
    np.testing.assert_allclose(rows.se, [5.25, 2.25])
    np.testing.assert_allclose(rows.mse, [5.25 / 4, 2.25 / 4])


def test_policy_evaluation_checks_its_settings(tmp_path):
    m = Corridor().model()
    with pytest.raises(ValueError, match=r"policy_evaluation.epsilon must be in \[0, 1\]"):
        PolicyEvaluation(m, 0.99, epsilon=1.5)
    pe = PolicyEvaluation(m, 0.99, epsilon=0.001)
    np.testing.assert_allclose(pe.probs.sum(axis=1), 1.0)
    probe = pe.probe(tmp_path, "a", "e", [0])
    assert probe.q_true.shape == (68, 5)  # the two reward states end episodes: they are not scored
    probe.close()


# ---- policy evaluation runs ------------------------------------------------------------------------------------------

def corridor_cfg(cfg_factory, net: str, *extra: str):
    return cfg_factory("+experiment=dueling_corridor", f"+experiment/dueling_corridor_net@_global_={net}",
                       "env.kwargs.vertical=2", "env.kwargs.horizontal=6", "threads=1", *extra)


@pytest.mark.parametrize("net", ["single", "dueling"])
def test_member_equals_solo_run_with_its_seed(cfg_factory, tmp_path, net):
    short = ("total_steps=300", "learning_starts=50", "policy_evaluation.every=50", "env.kwargs.n_actions=7")
    train(corridor_cfg(cfg_factory, net, "n_seeds=2", "seed=3", *short), tmp_path / "pop", agent_name=net,
          progress=False)
    train(corridor_cfg(cfg_factory, net, "n_seeds=1", "seed=4", *short), tmp_path / "solo", agent_name=net,
          progress=False)
    pop, solo = pd.read_csv(tmp_path / "pop" / "q_error.csv"), pd.read_csv(tmp_path / "solo" / "q_error.csv")
    member = pop[pop.seed == 4].reset_index(drop=True)
    assert len(member) == 6
    pd.testing.assert_frame_equal(member, solo, rtol=1e-5)
    returns = pd.read_csv(tmp_path / "pop" / "returns.csv")
    assert set(returns["return"]) <= {1.0, 0.1}  # every episode ends at one of the two reward states


def test_config_errors_for_an_environment_without_a_model(cfg_factory, tmp_path):
    cfg = cfg_factory("+experiment=dueling_corridor", "env=chain", "total_steps=600")
    with pytest.raises(ConfigError, match="policy_evaluation needs an environment whose model is known"):
        train(cfg, tmp_path / "run", progress=False)


@pytest.mark.parametrize("net", ["single", "dueling"])
def test_squared_error_decreases(cfg_factory, tmp_path, net):
    # pi explores half the time here, so that every action's value is learned from data by both networks
    cfg = corridor_cfg(cfg_factory, net, "n_seeds=2", "total_steps=3000", "learning_starts=100",
                       "policy_evaluation.every=100", "policy_evaluation.epsilon=0.5", "env.kwargs.n_actions=10")
    train(cfg, tmp_path / "run", agent_name=net, progress=False)
    se = pd.read_csv(tmp_path / "run" / "q_error.csv").pivot(index="step", columns="seed", values="se")
    first, last = se.iloc[0], se.iloc[-5:].mean()
    assert (last < 0.3 * first).all(), (first, last)


# ---- the analysis ----------------------------------------------------------------------------------------------------

def fake_run(directory, agent: str, n_actions: int, finals: dict[int, float]):
    """A run directory with a q_error.csv (two rows per seed; the last holds ``finals[seed]``) and its config."""
    (directory / ".hydra").mkdir(parents=True)
    (directory / ".hydra" / "config.yaml").write_text(f"env:\n  kwargs:\n    n_actions: {n_actions}\n")
    (directory / "metrics.csv").write_text("agent,env,seed,step\n")
    rows = [dict(agent=agent, env="rlzoo/Corridor-v0", seed=s, step=step, updates=step, se=se, mse=se / 10)
            for s, final in finals.items() for step, se in ((50, 100.0), (100, final))]
    pd.DataFrame(rows).to_csv(directory / "q_error.csv", index=False)


def test_analysis_table_by_hand(tmp_path):
    from analysis import corridor

    fake_run(tmp_path / "runs" / "a", "dqn", 20, {0: 4.0, 1: 6.0})
    fake_run(tmp_path / "runs" / "b", "dueling_dqn", 20, {0: 1.0, 1: 3.0})
    corridor.main([str(tmp_path / "runs"), "--out", str(tmp_path / "out" / "c"), "--last", "1", "--reps", "200"])
    tab = pd.read_csv(tmp_path / "out" / "c.csv")
    row = tab.iloc[0]
    assert row.n_actions == 20 and row["single-stream"] == 5.0 and row["dueling"] == 2.0
    assert row.ratio == 2.5 and row.p_dueling_lower == 1.0  # every dueling seed ends below every single-stream one
    assert 4.0 <= row["single-stream_low"] <= 5.0 <= row["single-stream_high"] <= 6.0
    assert (tmp_path / "out" / "c.png").exists() and "| 20 | 5 [" in (tmp_path / "out" / "c.md").read_text()
