"""Noisy nets (Fortunato et al. 2018, factorised Gaussian noise): the layer's initialisation and noise
statistics, its output formula, when the agent draws noise (fresh and independent for online and target
networks at every update, fresh acting noise after it), deterministic evaluation with the mean weights, and
noisy agents in real runs (population member = solo run, epsilon off, CartPole and MinAtar)."""

from __future__ import annotations

import functools
import math

import numpy as np
import pandas as pd
import pytest
import torch

from rlzoo.agents.dqn import DQNAgent
from rlzoo.loop import evaluate
from rlzoo.nets import (MLP, DuelingHead, ObservationEncoder, PopLinear, PopNoisyLinear, QHead, QNetwork,
                        member_generators)
from rlzoo.nets.noise import NOISE_ONLINE, NOISE_TARGET, NoiseSampler, NoisyNets
from rlzoo.replay import Batch
from rlzoo.target_sync import HardSync
from rlzoo.targets import dqn_target
from rlzoo.train import train
from conftest import make_cfg
from test_c51 import member_equals_solo, short


def f(x):
    return np.sign(x) * np.sqrt(np.abs(x))


def test_initialisation_follows_the_paper_and_each_member_its_own_seed():
    """Section 3.2, factorised noise: mu ~ U[-1/sqrt(p), 1/sqrt(p)], sigma = sigma0 / sqrt(p) (p = fan-in)."""
    p, q = 400, 50
    layer = PopNoisyLinear(p, q, member_generators([0, 1]), sigma0=0.5)
    bound = 1 / math.sqrt(p)
    mu = torch.cat([layer.weight_mu.flatten(), layer.bias_mu.flatten()])
    assert mu.abs().max() <= bound and mu.abs().max() > 0.99 * bound
    # uniform on [-b, b]: mean 0 (standard error b / sqrt(3 n)), variance b^2 / 3
    assert abs(mu.mean().item()) < 4 * bound / math.sqrt(3 * mu.numel())
    assert mu.var().item() == pytest.approx(bound ** 2 / 3, rel=0.03)
    assert torch.all(layer.weight_sigma == 0.5 * bound) and torch.all(layer.bias_sigma == 0.5 * bound)
    solo = PopNoisyLinear(p, q, member_generators([1]), sigma0=0.5)
    assert torch.equal(solo.weight_mu[0], layer.weight_mu[1]) and torch.equal(solo.bias_mu[0], layer.bias_mu[1])
    with pytest.raises(ValueError, match="sigma0"):
        PopNoisyLinear(3, 2, member_generators([0]), sigma0=-1.0)


def test_noise_is_factorised_f_of_the_members_own_normal_draws():
    """Each sample draws p + q standard normals per member from (seed, NOISE_ONLINE) and keeps f of them:
    eps_in = f(x[:p]), eps_out = f(x[p:]); the weight noise is their outer product."""
    p, q, seeds = 6, 4, [7, 8]
    net = QNetwork(ObservationEncoder((p,)), MLP((p,), member_generators(seeds), hidden_sizes=()),
                   QHead(p, q, member_generators(seeds), layer=PopNoisyLinear))
    sampler, layer = NoiseSampler(net, seeds, NOISE_ONLINE), net.head.q
    refs = [np.random.default_rng([s, NOISE_ONLINE]) for s in seeds]
    for _ in range(3):
        sampler.sample()
        for i, rng in enumerate(refs):
            x = f(rng.standard_normal(p + q))
            assert torch.allclose(layer.eps_in[i], torch.tensor(x[:p], dtype=torch.float32))
            assert torch.allclose(layer.eps_out[i], torch.tensor(x[p:], dtype=torch.float32))
    w, b = layer.weight_and_bias()
    eps_w = (w - layer.weight_mu) / layer.weight_sigma
    assert torch.allclose(eps_w, layer.eps_out[:, :, None] * layer.eps_in[:, None, :], atol=1e-5)
    assert torch.allclose((b - layer.bias_mu) / layer.bias_sigma, layer.eps_out[:, None, :], atol=1e-5)
    x = torch.randn(2, 5, p)
    assert torch.allclose(layer(x), x @ w.transpose(1, 2) + b, atol=1e-5)


def test_noise_statistics():
    """f(x) for x ~ N(0, 1): mean 0, E[f^2] = E|x| = sqrt(2/pi); the weight noise f(a) f(b): mean 0,
    variance (2/pi). 200 samples of a 50 x 40 layer for 2 members."""
    layer = PopNoisyLinear(50, 40, member_generators([0, 1]))
    sampler = NoiseSampler(layer, [0, 1], NOISE_ONLINE)
    eps, eps_w = [], []
    for _ in range(200):
        sampler.sample()
        eps.append(torch.cat([layer.eps_in, layer.eps_out], dim=1).flatten())
        eps_w.append((layer.eps_out[:, :, None] * layer.eps_in[:, None, :]).flatten())
    eps, eps_w = torch.cat(eps).double(), torch.cat(eps_w).double()
    assert abs(eps.mean().item()) < 4 * math.sqrt(math.sqrt(2 / math.pi) / eps.numel())
    assert (eps ** 2).mean().item() == pytest.approx(math.sqrt(2 / math.pi), rel=0.02)
    assert eps_w.mean().item() == pytest.approx(0.0, abs=0.01)
    assert eps_w.var().item() == pytest.approx(2 / math.pi, rel=0.03)
    # the online and target streams are independent: different draws for the same seed
    other = PopNoisyLinear(50, 40, member_generators([0, 1]))
    NoiseSampler(other, [0, 1], NOISE_TARGET).sample()
    NoiseSampler(layer, [0, 1], NOISE_ONLINE).sample()
    assert not torch.equal(other.eps_in, layer.eps_in)


P, B, A, F_IN = 2, 8, 3, 4


def make_agent(seeds=(3, 4), head="q", fast_path=False):
    gens = member_generators(list(seeds))
    layer = functools.partial(PopNoisyLinear, sigma0=0.5)
    head = QHead(8, A, gens, layer=layer) if head == "q" else DuelingHead(8, A, gens, hidden=6, layer=layer)
    net = QNetwork(ObservationEncoder((F_IN,)), MLP((F_IN,), gens, hidden_sizes=(8,)), head)
    return DQNAgent(net, torch.optim.SGD(net.parameters(), lr=0.05), dqn_target, target_sync=HardSync(every=100),
                    gamma=0.9, loss="mse", max_grad_norm=None, fast_path=fast_path, seeds=list(seeds))


def batch(seed, population=P):
    g = torch.Generator().manual_seed(seed)
    return Batch(torch.randn(population, B, F_IN, generator=g), torch.randint(0, A, (population, B), generator=g),
                 torch.randn(population, B, generator=g), torch.randn(population, B, F_IN, generator=g),
                 (torch.rand(population, B, generator=g) < 0.3).float())


def draws(seeds, stream, count, layer):
    """The ``count``-th noise sample of ``layer``'s shape from each member's stream."""
    out = []
    for s in seeds:
        rng = np.random.default_rng([s, stream])
        for _ in range(count):
            x = f(rng.standard_normal(layer.in_features + layer.out_features))
        out.append(x)
    x = torch.tensor(np.stack(out), dtype=torch.float32)
    return x[:, :layer.in_features], x[:, layer.in_features:]


def test_fresh_independent_noise_at_every_update_and_for_acting():
    """Construction draws the acting noise (online sample 1). Update k draws online sample 2k for the loss and
    target sample k, independent streams, then online sample 2k + 1 for acting. The loss of update k is the
    one computed with exactly those draws."""
    seeds = [3, 4]
    agent = make_agent(seeds)
    layer, target_layer = agent.q_net.head.q, agent.target_net.head.q
    first = draws(seeds, NOISE_ONLINE, 1, layer)
    assert torch.allclose(layer.eps_in, first[0]) and torch.allclose(layer.eps_out, first[1])
    for k in range(1, 4):
        b = batch(k)
        # the loss with online sample 2k and target sample k, computed by hand on copies of the networks
        with torch.no_grad():
            layer_copy = {n: t.clone() for n, t in agent.q_net.state_dict().items()}
            layer.set_noise(*draws(seeds, NOISE_ONLINE, 2 * k, layer))
            target_layer.set_noise(*draws(seeds, NOISE_TARGET, k, target_layer))
            q_sa = agent.q_net(b.obs).gather(-1, b.action[..., None]).squeeze(-1)
            y = b.reward + 0.9 * (1 - b.terminated) * agent.target_net(b.next_obs).max(-1).values
            agent.q_net.load_state_dict(layer_copy)
        metrics, _ = agent.learn(b)
        assert torch.allclose(metrics["loss"], ((y - q_sa) ** 2).mean(1), atol=1e-5), k
        acting = draws(seeds, NOISE_ONLINE, 2 * k + 1, layer)
        assert torch.allclose(layer.eps_in, acting[0]) and torch.allclose(layer.eps_out, acting[1])
        target_k = draws(seeds, NOISE_TARGET, k, target_layer)
        assert torch.allclose(target_layer.eps_in, target_k[0])


def test_acting_is_noisy_and_evaluation_uses_the_mean_weights():
    agent = make_agent(head="dueling")
    obs = np.random.default_rng(0).standard_normal((P, F_IN)).astype(np.float32)
    q1 = agent.q_values(obs)
    agent.noise.online.sample()
    assert not np.allclose(q1, agent.q_values(obs))  # another noise sample, other values
    with agent.evaluating():
        e1 = agent.q_values(obs)
        agent.noise.online.sample()
        e2 = agent.q_values(obs)
        # the mean weights: the same network with sigma = 0
        sigma0 = {n: t.clone() for n, t in agent.q_net.state_dict().items()}
        with torch.no_grad():
            for n, p in agent.q_net.named_parameters():
                if "sigma" in n:
                    p.zero_()
        agent.q_net.train()
        zero_sigma = agent.q_values(obs)
        agent.q_net.eval()
        agent.q_net.load_state_dict(sigma0)
    np.testing.assert_array_equal(e1, e2)
    np.testing.assert_allclose(e1, zero_sigma, atol=1e-6)
    assert agent.q_net.training  # training mode (noise on) again after the evaluation


def test_a_greedy_evaluation_is_deterministic(cfg_factory, tmp_path):
    """The loop's evaluation, twice at the same step with the acting noise redrawn in between, plays the same
    episodes."""
    parts = train(cfg_factory("agent=noisy_dqn", *short("n_seeds=2", steps=300)), tmp_path, "noisy_dqn")
    from rlzoo.seeding import evaluation_seeds
    results = []
    for _ in range(2):
        env_seeds, rngs = evaluation_seeds(parts.seeds, 300)
        parts.agent.noise.online.sample()
        with parts.agent.evaluating():
            results.append(evaluate(parts.agent, parts.eval_envs, 3, 0.0, rngs, 2, seeds=env_seeds))
    assert results[0] == results[1]


def test_the_numpy_fast_path_declines_noisy_layers():
    assert make_agent(fast_path=True).fast is None
    gens = member_generators([0])
    net = QNetwork(ObservationEncoder((F_IN,)), MLP((F_IN,), gens, hidden_sizes=(8,)),
                   QHead(8, A, gens, layer=PopLinear))
    plain = DQNAgent(net, torch.optim.Adam(net.parameters()), dqn_target, fast_path=True)
    assert plain.fast is not None and plain.noise is None


def test_noise_state_is_saved_and_restored():
    a, b = make_agent(), make_agent()
    a.learn(batch(0))
    state = a.state_dict()
    assert set(state["noise"]) == {"online", "target"}
    b.load_state_dict(state)
    for x, y in zip(a.q_net.buffers(), b.q_net.buffers()):
        assert torch.equal(x, y)
    a.learn(batch(1))
    b.learn(batch(1))
    for x, y in zip(a.q_net.state_dict().values(), b.q_net.state_dict().values()):
        assert torch.equal(x, y)
    with pytest.raises(ValueError, match="seeds"):
        NoisyNets.build(a.q_net, a.target_net, None)


def test_population_member_equals_solo_run(tmp_path):
    pop = train(make_cfg("agent=noisy_dqn", *short("seed=5", "n_seeds=3")), tmp_path / "pop", "noisy_dqn")
    solo = train(make_cfg("agent=noisy_dqn", *short("seed=6", "n_seeds=1")), tmp_path / "solo", "noisy_dqn")
    member_equals_solo(pop, solo, tmp_path / "pop", tmp_path / "solo")


@pytest.mark.parametrize("agent", [["agent=noisy_dqn"], ["agent=dueling_double_dqn", "+agent/exploration=noisy"]],
                         ids=["noisy_dqn", "noisy_dueling_double"])
@pytest.mark.parametrize("env", [["env=cartpole"], ["+experiment=minatar", "env.max_episode_steps=100"]],
                         ids=["cartpole", "minatar"])
def test_composed_configs_train_without_epsilon(tmp_path, agent, env):
    """Epsilon is 0 once learning starts, also under an experiment preset that sets its own schedule (MinAtar's)."""
    parts = train(make_cfg(*env, *agent, *short("n_seeds=2", steps=300)), tmp_path, "noisy")
    assert parts.agent.noise is not None and parts.agent.fast is None and parts.agent.updates == 201
    metrics = pd.read_csv(tmp_path / "metrics.csv")
    assert (metrics.loc[metrics.step > 100, "epsilon"] == 0).all()
    assert (metrics.loc[metrics.step == 100, "epsilon"] == 1).all()
    assert metrics["loss"].notna().all()


def test_one_override_switches_noisy_nets_off():
    """An agent whose defaults pick exploration: noisy goes back to plain layers and epsilon-greedy with
    agent/exploration=epsilon (the Rainbow ablation's single override)."""
    plain = make_cfg("agent=noisy_dqn", "agent/exploration=epsilon")
    assert "layer" not in plain.agent.head and make_cfg("agent=dqn").agent == plain.agent
