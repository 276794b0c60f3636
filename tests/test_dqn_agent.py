"""DQNAgent.update: the numpy learner (hand-written backward pass) against the autograd learner."""

import copy

import numpy as np
import pytest
import torch

from rlzoo.agents.dqn import DQNAgent
from rlzoo.nets import MLP, DuelingHead, ObservationEncoder, QHead, QNetwork, member_generators
from rlzoo.optim import Adam
from rlzoo.replay import Batch
from rlzoo.targets import double_dqn_target, dqn_target

P, B, A = 3, 16, 4


def make_agent(head, target_fn, loss, max_grad_norm, discrete, cpu_numpy, optimizer=Adam, hidden=(12, 10)):
    gens = member_generators([5, 6, 7])
    encoder = ObservationEncoder((), num_states=9) if discrete else ObservationEncoder((5,))
    torso = MLP(encoder.out_shape, gens, hidden_sizes=hidden)
    width = hidden[-1]
    head_module = {"q": lambda: QHead(width, A, gens), "dueling": lambda: DuelingHead(width, A, gens),
                   "dueling_hidden": lambda: DuelingHead(width, A, gens, hidden=6 if width < 50 else 64)}[head]()
    net = QNetwork(encoder, torso, head_module)
    return DQNAgent(net, optimizer(net.parameters(), lr=1e-2), target_fn, gamma=0.9, loss=loss,
                    max_grad_norm=max_grad_norm, cpu_numpy=cpu_numpy)


def batch(seed, discrete, B=B):
    g = torch.Generator().manual_seed(seed)
    if discrete:
        obs, next_obs = torch.randint(0, 9, (P, B), generator=g), torch.randint(0, 9, (P, B), generator=g)
    else:
        obs, next_obs = torch.randn(P, B, 5, generator=g) * 2, torch.randn(P, B, 5, generator=g) * 2
    return Batch(obs, torch.randint(0, A, (P, B), generator=g), torch.randn(P, B, generator=g) * 3, next_obs,
                 (torch.rand(P, B, generator=g) < 0.2).float())


@pytest.mark.parametrize("head,target_fn,loss,max_grad_norm,discrete,large", [
    ("q", dqn_target, "huber", 10.0, False, False),
    ("q", double_dqn_target, "mse", None, False, False),
    ("dueling", dqn_target, "huber", 0.1, False, False),  # a clip that binds
    ("dueling_hidden", double_dqn_target, "huber", 1.0, False, False),
    ("q", dqn_target, "mse", 1.0, True, False),  # one-hot states
    # arrays above networks._TORCH_FROM elements: the elementwise steps run as torch kernels
    ("q", dqn_target, "huber", 10.0, False, True),
    ("dueling_hidden", double_dqn_target, "huber", 1.0, False, True),
])
def test_numpy_learner_matches_autograd(head, target_fn, loss, max_grad_norm, discrete, large):
    from rlzoo.nets import _TORCH_FROM

    hidden, batch_size = ((96, 80), 64) if large else ((12, 10), B)
    assert (P * batch_size * hidden[0] >= _TORCH_FROM) == large
    fast = make_agent(head, target_fn, loss, max_grad_norm, discrete, cpu_numpy=True, hidden=hidden)
    ref = make_agent(head, target_fn, loss, max_grad_norm, discrete, cpu_numpy=False, hidden=hidden)
    assert fast.uses_numpy and not ref.uses_numpy
    start = copy.deepcopy(ref.q_net.state_dict())
    for step in range(6):
        b = batch(step, discrete, batch_size)
        m_fast, m_ref = fast.update(b), ref.update(b)
        assert set(m_fast) == set(m_ref)
        for k in m_ref:
            assert m_fast[k].shape == (P,)
            assert torch.allclose(m_fast[k], m_ref[k], rtol=1e-4, atol=1e-5), (step, k, m_fast[k], m_ref[k])
        if step == 0 and max_grad_norm == 0.1:
            assert (m_ref["grad_norm"] > 0.1).all()  # the clip was active
        if step % 2 == 1:  # sync the target networks
            fast.target_net.load_state_dict(fast.q_net.state_dict())
            ref.target_net.load_state_dict(ref.q_net.state_dict())
    for (name, p_fast), p_ref, p0 in zip(fast.q_net.named_parameters(), ref.q_net.parameters(), start.values()):
        assert not torch.allclose(p_ref, p0), name  # every parameter was trained
        assert torch.allclose(p_fast, p_ref, rtol=1e-4, atol=1e-5), name


def test_numpy_learner_gradients_equal_autograd_with_plain_sgd():
    """One SGD step of lr 1: the parameter change is minus the gradient, compared parameter by parameter."""
    fast = make_agent("dueling_hidden", double_dqn_target, "huber", None, False, True, optimizer=torch.optim.SGD)
    ref = make_agent("dueling_hidden", double_dqn_target, "huber", None, False, False, optimizer=torch.optim.SGD)
    for agent in (fast, ref):
        agent.optimizer.param_groups[0]["lr"] = 1.0
    before = [p.detach().clone() for p in ref.q_net.parameters()]
    b = batch(11, False)
    fast.update(b)
    ref.update(b)
    for p_fast, p_ref, p0 in zip(fast.q_net.parameters(), ref.q_net.parameters(), before):
        g_fast, g_ref = p0 - p_fast.detach(), p0 - p_ref.detach()
        assert g_ref.abs().max() > 0
        assert torch.allclose(g_fast, g_ref, rtol=1e-4, atol=1e-6)


def test_members_learn_independently_in_the_numpy_learner():
    """Member 1's update does not depend on member 0's or 2's data."""
    a = make_agent("dueling", dqn_target, "huber", 10.0, False, True, optimizer=torch.optim.SGD)
    b_agent = make_agent("dueling", dqn_target, "huber", 10.0, False, True, optimizer=torch.optim.SGD)
    b1 = batch(0, False)
    b2 = Batch(*(torch.cat([x[:1] * 0 + 1, x[1:2], x[2:] * 0], dim=0) for x in batch(0, False)))
    a.update(b1)
    b_agent.update(b2)
    for pa, pb in zip(a.q_net.parameters(), b_agent.q_net.parameters()):
        assert torch.equal(pa[1], pb[1])
        assert not torch.equal(pa[0], pb[0])


def test_rules_without_a_numpy_twin_run_in_torch_inside_the_numpy_learner():
    import functools

    def custom(reward, terminated, gamma, q_next_target):  # DQN's rule, under another name
        return dqn_target(reward, terminated, gamma, q_next_target)

    fast = make_agent("q", custom, "huber", 10.0, False, True)
    ref = make_agent("q", dqn_target, "huber", 10.0, False, False)
    assert fast.uses_numpy and fast.numpy_target_fn is None
    assert make_agent("q", functools.partial(dqn_target), "huber", 10.0, False, True).numpy_target_fn is not None
    for step in range(3):
        m_fast, m_ref = fast.update(batch(step, False)), ref.update(batch(step, False))
        assert torch.allclose(m_fast["loss"], m_ref["loss"], rtol=1e-4, atol=1e-6)
