"""DQNAgent's contract: learn() returns per-member metrics and per-sample TD errors, reads importance
weights from the batch, and applies its own target-network rule after every update."""

import torch

from rlzoo.agents.dqn import DQNAgent
from rlzoo.nets import MLP, ObservationEncoder, QHead, QNetwork, member_generators
from rlzoo.replay import Batch
from rlzoo.target_sync import EnvStepHardSync, HardSync, SoftSync
from rlzoo.targets import dqn_target

P, B, A = 2, 8, 3


def make_agent(target_sync, fast_path=False, lr=1e-2):
    gens = member_generators([3, 4])
    net = QNetwork(ObservationEncoder((4,)), MLP((4,), gens, hidden_sizes=(8,)), QHead(8, A, gens))
    return DQNAgent(net, torch.optim.SGD(net.parameters(), lr=lr), dqn_target, target_sync=target_sync, gamma=0.9,
                    loss="mse", max_grad_norm=None, fast_path=fast_path)


def batch(seed, weights=None):
    g = torch.Generator().manual_seed(seed)
    return Batch(torch.randn(P, B, 4, generator=g), torch.randint(0, A, (P, B), generator=g),
                 torch.randn(P, B, generator=g), torch.randn(P, B, 4, generator=g),
                 (torch.rand(P, B, generator=g) < 0.3).float(), weights=weights)


def test_td_errors_are_target_minus_prediction():
    agent = make_agent(HardSync(every=100))
    b = batch(0)
    with torch.no_grad():
        q_sa = agent.q_net(b.obs).gather(-1, b.action.unsqueeze(-1)).squeeze(-1)
        q_next = agent.target_net(b.next_obs).max(dim=-1).values
    y = b.reward + 0.9 * (1 - b.terminated) * q_next
    metrics, td = agent.learn(b)
    assert torch.allclose(td, y - q_sa, atol=1e-6)
    assert torch.allclose(metrics["loss"], (y - q_sa).pow(2).mean(dim=1), atol=1e-6)
    assert set(metrics) == {"loss", "q_mean"} and metrics["loss"].shape == (P,)


def test_importance_weights_scale_each_sample_loss():
    """Weights 2 on every sample double the loss and the gradient step of plain SGD; weight 0 on a
    member leaves its parameters where they were."""
    plain, doubled, masked = (make_agent(HardSync(every=100)) for _ in range(3))
    start = [p.detach().clone() for p in plain.q_net.parameters()]
    m1, _ = plain.learn(batch(1))
    m2, _ = doubled.learn(batch(1, weights=torch.full((P, B), 2.0)))
    assert torch.allclose(m2["loss"], 2 * m1["loss"])
    for p0, p1, p2 in zip(start, plain.q_net.parameters(), doubled.q_net.parameters()):
        assert torch.allclose(p2 - p0, 2 * (p1 - p0), atol=1e-6)
    masked.learn(batch(1, weights=torch.tensor([[1.0] * B, [0.0] * B])))
    for p0, p in zip(start, masked.q_net.parameters()):
        assert torch.equal(p[1], p0[1]) and not torch.equal(p[0], p0[0])


def test_the_agent_applies_its_own_hard_sync():
    agent = make_agent(HardSync(every=3))
    initial = [p.detach().clone() for p in agent.target_net.parameters()]
    for step in range(1, 7):
        agent.learn(batch(step))
        synced = all(torch.equal(t, o) for t, o in zip(agent.target_net.parameters(), agent.q_net.parameters()))
        assert synced == (step % 3 == 0), step
        if step < 3:
            assert all(torch.equal(t, i) for t, i in zip(agent.target_net.parameters(), initial))


def test_the_agent_applies_its_own_soft_sync():
    agent = make_agent(SoftSync(tau=0.25))
    before = [p.detach().clone() for p in agent.target_net.parameters()]
    agent.learn(batch(0))
    for t, t0, o in zip(agent.target_net.parameters(), before, agent.q_net.parameters()):
        assert torch.allclose(t, 0.75 * t0 + 0.25 * o, atol=1e-6)


def test_fast_path_and_autograd_give_the_same_td_errors_and_weights():
    fast, ref = make_agent(HardSync(every=2), fast_path=True), make_agent(HardSync(every=2))
    assert fast.fast is not None and ref.fast is None
    for step in range(4):
        w = torch.rand(P, B, generator=torch.Generator().manual_seed(step)) + 0.5
        (_, td_fast), (_, td_ref) = fast.learn(batch(step, w)), ref.learn(batch(step, w))
        assert torch.allclose(td_fast, td_ref, atol=1e-5)
    for a, b in zip(fast.q_net.parameters(), ref.q_net.parameters()):
        assert torch.allclose(a, b, atol=1e-5)


def test_target_counted_in_env_steps_is_fixed_within_a_burst():
    """stable-baselines3's CartPole recipe: 4 updates every 16 steps, target period 10 steps. The target
    equals the online network as it was before each burst (a multiple of 10 lies between bursts), and
    stays fixed during the burst; the environment step survives a state round trip."""
    agent = make_agent(EnvStepHardSync(every=10), lr=0.1)
    for burst, step in enumerate(range(16, 80, 16)):
        before = [p.detach().clone() for p in agent.q_net.parameters()]
        for k in range(4):
            agent.learn(batch(10 * burst + k), step=step)
            for b0, t in zip(before, agent.target_net.parameters()):
                assert torch.equal(b0, t)
    clone = make_agent(EnvStepHardSync(every=10))
    clone.load_state_dict(agent.state_dict())
    assert clone.env_step == 64
