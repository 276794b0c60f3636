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
