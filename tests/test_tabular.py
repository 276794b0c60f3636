import numpy as np
import pytest
import torch

from rlzoo.agents.tabular import Discretizer, TabularQAgent
from rlzoo.envs import ChainMDP
from rlzoo.replay import Batch
from rlzoo.train import train


def test_discretizer_grid():
    d = Discretizer(bins=[2, 3], low=[0.0, 0.0], high=[1.0, 3.0])
    assert d.num_states == 6
    obs = torch.tensor([[0.1, 0.5], [0.9, 2.9], [5.0, -7.0], [0.6, 1.5]])
    # row-major: state = cell0 * 3 + cell1; out-of-range values are clipped into the edge cells
    assert d(obs).tolist() == [0, 5, 3, 4]


def test_update_is_the_q_learning_rule():
    agent = TabularQAgent(num_states=3, num_actions=2, seeds=[0], lr=0.5, gamma=0.9)
    agent.q[0, 1] = torch.tensor([1.0, 3.0])
    batch = Batch(obs=torch.tensor([[0]]), action=torch.tensor([[1]]), reward=torch.tensor([[2.0]]),
                  next_obs=torch.tensor([[1]]), terminated=torch.tensor([[0.0]]))
    agent.learn(batch)
    assert agent.q[0, 0, 1].item() == pytest.approx(0.5 * (2.0 + 0.9 * 3.0))  # 0 + lr * (y - 0)
    batch = batch._replace(terminated=torch.tensor([[1.0]]))
    agent.learn(batch)
    assert agent.q[0, 0, 1].item() == pytest.approx(2.35 + 0.5 * (2.0 - 2.35))  # no bootstrap when terminal


def test_converges_to_known_q_star_of_chain_mdp(cfg_factory, tmp_path):
    """Online Q-learning (replay of one transition) on the 5-state chain recovers Q* exactly."""
    cfg = cfg_factory("agent=qtable", "env=chain", "gamma=0.9", "lr=0.5", "total_steps=4000", "n_seeds=3",
                      "eps_start=1.0", "eps_end=0.3", "eps_decay_fraction=0.5", "eval_every=0", "progress=false")
    parts = train(cfg, tmp_path, "qtable", progress=False)
    q_star = ChainMDP.optimal_q(5, 0.9)
    for member in range(3):
        q = parts.agent.q[member].numpy()
        assert np.allclose(q[:4], q_star[:4], atol=1e-4), (member, q, q_star)
        assert np.allclose(q[4], 0.0)  # the terminal state is never updated


def test_qtable_solves_frozenlake(cfg_factory, tmp_path):
    cfg = cfg_factory("agent=qtable", "env=frozenlake", "total_steps=20000", "n_seeds=3", "eval_every=20000",
                      "eval_episodes=5", "progress=false")
    train(cfg, tmp_path, "qtable", progress=False)
    import pandas as pd
    df = pd.read_csv(tmp_path / "returns.csv")
    final = df[df.phase == "eval"].groupby("seed")["return"].mean()
    assert len(final) == 3 and (final == 1.0).all(), final


def test_double_q_update_uses_the_other_table_to_evaluate(monkeypatch):
    """The coin picks the table to update; that table picks a' in s', the other one values it (hand-computed)."""
    from rlzoo.agents.tabular import DoubleTabularQAgent

    class Coin:  # the member's stream, replaced by a coin that shows what the test asks for
        def __init__(self, u):
            self.u = u

        def random(self, n):
            return np.full(n, self.u)

    def fresh(u):
        agent = DoubleTabularQAgent(num_states=3, num_actions=2, seeds=[0], lr=0.5, gamma=0.9)
        agent.q[0, 1] = torch.tensor([1.0, 3.0])   # q picks a'=1 in s'=1 ...
        agent.q2[0, 1] = torch.tensor([5.0, 2.0])  # ... q2 picks a'=0
        agent.rngs = [Coin(u)]
        return agent

    batch = Batch(obs=torch.tensor([[0]]), action=torch.tensor([[1]]), reward=torch.tensor([[2.0]]),
                  next_obs=torch.tensor([[1]]), terminated=torch.tensor([[0.0]]))
    a = fresh(0.2)  # < 0.5: update q with q2's value of q's choice: y = 2 + 0.9 * q2[1, 1] = 3.8
    a.learn(batch)
    assert a.q[0, 0, 1].item() == pytest.approx(0.5 * 3.8) and a.q2[0, 0].tolist() == [0.0, 0.0]
    b = fresh(0.7)  # >= 0.5: update q2 with q's value of q2's choice: y = 2 + 0.9 * q[1, 0] = 2.9
    b.learn(batch)
    assert b.q2[0, 0, 1].item() == pytest.approx(0.5 * 2.9) and b.q[0, 0].tolist() == [0.0, 0.0]
    b.learn(batch._replace(terminated=torch.tensor([[1.0]])))  # terminal: y = r, no bootstrap
    assert b.q2[0, 0, 1].item() == pytest.approx(1.45 + 0.5 * (2.0 - 1.45))
    # it acts on the mean of the two tables
    assert b.q_values(np.array([1])).tolist() == [[3.0, 2.5]]


def test_double_q_coins_come_from_each_members_own_stream():
    """Member i of a population draws the coins a solo agent with seed + i draws (and no other stream)."""
    from rlzoo.agents.tabular import TABLE_CHOICE, DoubleTabularQAgent
    from rlzoo.seeding import EVAL_ENV, EVAL_EXPLORATION, EXPLORATION, REPLAY

    assert TABLE_CHOICE not in (EXPLORATION, REPLAY, EVAL_EXPLORATION, EVAL_ENV)
    batch = Batch(obs=torch.tensor([[0], [0], [0]]), action=torch.tensor([[1], [1], [1]]),
                  reward=torch.tensor([[1.0], [1.0], [1.0]]), next_obs=torch.tensor([[2], [2], [2]]),
                  terminated=torch.tensor([[1.0], [1.0], [1.0]]))
    pop = DoubleTabularQAgent(num_states=3, num_actions=2, seeds=[4, 5, 6], lr=0.5)
    solo = DoubleTabularQAgent(num_states=3, num_actions=2, seeds=[5], lr=0.5)
    for _ in range(20):
        pop.learn(batch)
        solo.learn(batch._replace(**{k: getattr(batch, k)[1:2] for k in ("obs", "action", "reward", "next_obs",
                                                                           "terminated")}))
    assert torch.equal(pop.q[1], solo.q[0]) and torch.equal(pop.q2[1], solo.q2[0])
    assert not torch.equal(pop.q[0], pop.q[1])  # different seeds, different coins
    assert (pop.q[1, 0, 1] > 0) and (pop.q2[1, 0, 1] > 0)  # both tables were updated


def test_double_q_converges_to_known_q_star_of_chain_mdp(cfg_factory, tmp_path):
    """Both tables of online Double Q-learning on the 5-state chain recover Q* (deterministic rewards: the
    double estimator is unbiased there, and both tables reach the fixed point)."""
    cfg = cfg_factory("agent=double_qtable", "env=chain", "gamma=0.9", "lr=0.5", "total_steps=6000", "n_seeds=3",
                      "eps_start=1.0", "eps_end=0.3", "eps_decay_fraction=0.5", "eval_every=0", "progress=false")
    parts = train(cfg, tmp_path, "double_qtable", progress=False)
    q_star = ChainMDP.optimal_q(5, 0.9)
    for member in range(3):
        for table in (parts.agent.q, parts.agent.q2):
            q = table[member].numpy()
            assert np.allclose(q[:4], q_star[:4], atol=1e-3), (member, q, q_star)
