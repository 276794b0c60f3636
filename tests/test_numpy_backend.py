"""The optional numpy backend (rlzoo.nets.numpy_backend) against torch and autograd: forward passes,
TD-target twins, and whole learner steps (losses, TD errors, clipped gradients, trained weights)."""

import copy

import numpy as np
import pytest
import torch

from rlzoo.agents.dqn import DQNAgent
from rlzoo.nets import MLP, DuelingHead, ObservationEncoder, QHead, QNetwork, member_generators
from rlzoo.nets.numpy_backend import TARGET_TWINS, TORCH_FROM, NumpyLearner, NumpyNet
from rlzoo.replay import Batch
from rlzoo.target_sync import HardSync
from rlzoo.targets import double_dqn_target, dqn_target


def build(seeds, dueling=False):
    gens = member_generators(seeds)
    head = DuelingHead(8, 3, gens) if dueling else QHead(8, 3, gens)
    return QNetwork(ObservationEncoder((4,)), MLP((4,), gens, hidden_sizes=(16, 8)), head)


def _numpy_and_torch(net, obs):
    with torch.no_grad():
        return NumpyNet(net).forward(obs.numpy()), net(obs).numpy()


def test_numpy_forward_matches_torch_forward():
    gens = member_generators([0, 1, 2])
    nets = [build([0, 1, 2]), build([0, 1, 2], dueling=True),
            QNetwork(ObservationEncoder((4,)), MLP((4,), gens, (16,)), DuelingHead(16, 3, gens, hidden=8))]
    obs = torch.randn(3, 5, 4)
    for net in nets:
        assert NumpyNet.covers(net)
        np_q, torch_q = _numpy_and_torch(net, obs)
        assert np_q.shape == (3, 5, 3) and np_q.dtype == torch_q.dtype
        assert abs(np_q - torch_q).max() < 1e-5
        assert not (np_q == 0).all()


def test_numpy_forward_one_hot_and_scaled_encoders():
    gens = member_generators([0])
    net = QNetwork(ObservationEncoder((), num_states=6), MLP((6,), gens, (8,)), QHead(8, 4, gens))
    states = torch.tensor([[0, 5, 3]])
    np_q, torch_q = _numpy_and_torch(net, states)
    assert abs(np_q - torch_q).max() < 1e-6
    net = QNetwork(ObservationEncoder((2, 3), scale=255.0), MLP((6,), gens, (8,)), QHead(8, 4, gens))
    pixels = torch.randint(0, 256, (1, 2, 2, 3), dtype=torch.uint8)
    np_q, torch_q = _numpy_and_torch(net, pixels)
    assert abs(np_q - torch_q).max() < 1e-6


def test_numpy_forward_follows_parameter_updates_and_loads():
    net = build([0])
    obs = torch.randn(1, 2, 4)
    before, _ = _numpy_and_torch(net, obs)
    opt = torch.optim.SGD(net.parameters(), lr=0.5)
    net(obs).sum().backward()
    opt.step()  # in place: the cached numpy views see the new values
    after, torch_after = _numpy_and_torch(net, obs)
    assert abs(after - before).max() > 1e-3 and abs(after - torch_after).max() < 1e-5
    other = build([7])
    net.load_state_dict(other.state_dict())
    loaded, torch_loaded = _numpy_and_torch(net, obs)
    assert abs(loaded - torch_loaded).max() < 1e-5 and abs(loaded - after).max() > 1e-3
    fast = NumpyNet(net)
    assert fast.views_valid()
    for p in net.parameters():  # replaced storage (as a device move does): the views no longer show it
        p.data = p.data.clone() * 2
    assert not fast.views_valid()


def test_cnn_networks_have_no_numpy_forward():
    from rlzoo.nets import MinAtarCNN
    gens = member_generators([0])
    net = QNetwork(ObservationEncoder((4, 10, 10), flatten=False), MinAtarCNN((4, 10, 10), gens), QHead(128, 3, gens))
    assert not NumpyNet.covers(net)
    assert NumpyLearner.build(net, net, dqn_target, False, "huber") is None


def test_numpy_twins_equal_the_torch_rules():
    g = torch.Generator().manual_seed(0)
    r, q_t, q_o = torch.randn(3, 50, generator=g), torch.randn(3, 50, 4, generator=g), torch.randn(3, 50, 4, generator=g)
    term = (torch.rand(3, 50, generator=g) < 0.3).float()
    for rule, twin in TARGET_TWINS.items():
        extra = (q_o,) if rule is double_dqn_target else ()
        expected = rule(r, term, 0.97, q_t, *extra)
        got = twin(r.numpy(), term.numpy(), 0.97, q_t.numpy(), *(x.numpy() for x in extra))
        assert got.dtype == np.float32 and got.shape == (3, 50)
        assert np.allclose(got, expected.numpy(), rtol=1e-6, atol=1e-6)
    assert not np.allclose(TARGET_TWINS[dqn_target](r.numpy(), term.numpy(), 0.97, q_t.numpy()),
                           TARGET_TWINS[double_dqn_target](r.numpy(), term.numpy(), 0.97, q_t.numpy(), q_o.numpy()))


P, B, A = 3, 16, 4


def make_agent(head, target_fn, loss, max_grad_norm, discrete, fast_path, optimizer=torch.optim.Adam, hidden=(12, 10)):
    gens = member_generators([5, 6, 7])
    encoder = ObservationEncoder((), num_states=9) if discrete else ObservationEncoder((5,))
    torso = MLP(encoder.out_shape, gens, hidden_sizes=hidden)
    width = hidden[-1]
    head_module = {"q": lambda: QHead(width, A, gens), "dueling": lambda: DuelingHead(width, A, gens),
                   "dueling_hidden": lambda: DuelingHead(width, A, gens, hidden=6 if width < 50 else 64)}[head]()
    net = QNetwork(encoder, torso, head_module)
    return DQNAgent(net, optimizer(net.parameters(), lr=1e-2), target_fn, target_sync=HardSync(every=2), gamma=0.9,
                    loss=loss, max_grad_norm=max_grad_norm, fast_path=fast_path)


def batch(seed, discrete, B=B, weighted=False):
    g = torch.Generator().manual_seed(seed)
    if discrete:
        obs, next_obs = torch.randint(0, 9, (P, B), generator=g), torch.randint(0, 9, (P, B), generator=g)
    else:
        obs, next_obs = torch.randn(P, B, 5, generator=g) * 2, torch.randn(P, B, 5, generator=g) * 2
    return Batch(obs, torch.randint(0, A, (P, B), generator=g), torch.randn(P, B, generator=g) * 3, next_obs,
                 (torch.rand(P, B, generator=g) < 0.2).float(),
                 weights=torch.rand(P, B, generator=g) + 0.5 if weighted else None)


@pytest.mark.parametrize("head,target_fn,loss,max_grad_norm,discrete,large", [
    ("q", dqn_target, "huber", 10.0, False, False),
    ("q", double_dqn_target, "mse", None, False, False),
    ("dueling", dqn_target, "huber", 0.1, False, False),  # a clip that binds
    ("dueling_hidden", double_dqn_target, "huber", 1.0, False, False),
    ("q", dqn_target, "mse", 1.0, True, False),  # one-hot states
    # arrays above numpy_backend.TORCH_FROM elements: the elementwise steps run as torch kernels
    ("q", dqn_target, "huber", 10.0, False, True),
    ("dueling_hidden", double_dqn_target, "huber", 1.0, False, True),
])
def test_numpy_learner_matches_autograd(head, target_fn, loss, max_grad_norm, discrete, large):
    hidden, batch_size = ((96, 80), 64) if large else ((12, 10), B)
    assert (P * batch_size * hidden[0] >= TORCH_FROM) == large
    fast = make_agent(head, target_fn, loss, max_grad_norm, discrete, fast_path=True, hidden=hidden)
    ref = make_agent(head, target_fn, loss, max_grad_norm, discrete, fast_path=False, hidden=hidden)
    assert fast.fast is not None and ref.fast is None
    start = copy.deepcopy(ref.q_net.state_dict())
    for step in range(6):
        b = batch(step, discrete, batch_size, weighted=step >= 3)
        (m_fast, td_fast), (m_ref, td_ref) = fast.learn(b), ref.learn(b)
        assert td_fast.shape == td_ref.shape == (P, batch_size)
        assert torch.allclose(td_fast, td_ref, rtol=1e-4, atol=1e-4)
        assert set(m_fast) == set(m_ref)
        for k in m_ref:
            assert m_fast[k].shape == (P,)
            assert torch.allclose(m_fast[k], m_ref[k], rtol=1e-4, atol=1e-5), (step, k, m_fast[k], m_ref[k])
        if step == 0 and max_grad_norm == 0.1:
            assert (m_ref["grad_norm"] > 0.1).all()  # the clip was active
        if step % 2 == 1:  # each agent's HardSync(every=2) copied its online network
            assert all(torch.equal(a, b) for a, b in zip(fast.target_net.parameters(), fast.q_net.parameters()))
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
    fast.learn(b)
    ref.learn(b)
    for p_fast, p_ref, p0 in zip(fast.q_net.parameters(), ref.q_net.parameters(), before):
        g_fast, g_ref = p0 - p_fast.detach(), p0 - p_ref.detach()
        assert g_ref.abs().max() > 0
        assert torch.allclose(g_fast, g_ref, rtol=1e-4, atol=1e-6)


def test_members_learn_independently_in_the_numpy_learner():
    """Member 1's update does not depend on member 0's or 2's data."""
    a = make_agent("dueling", dqn_target, "huber", 10.0, False, True, optimizer=torch.optim.SGD)
    b_agent = make_agent("dueling", dqn_target, "huber", 10.0, False, True, optimizer=torch.optim.SGD)
    b1 = batch(0, False)
    b2 = Batch(*(torch.cat([x[:1] * 0 + 1, x[1:2], x[2:] * 0], dim=0) for x in batch(0, False)[:5]))
    a.learn(b1)
    b_agent.learn(b2)
    for pa, pb in zip(a.q_net.parameters(), b_agent.q_net.parameters()):
        assert torch.equal(pa[1], pb[1])
        assert not torch.equal(pa[0], pb[0])


def test_rules_without_a_numpy_twin_run_in_torch_inside_the_numpy_learner():
    import functools

    def custom(reward, terminated, gamma, q_next_target):  # DQN's rule, under another name
        return dqn_target(reward, terminated, gamma, q_next_target)

    fast = make_agent("q", custom, "huber", 10.0, False, True)
    ref = make_agent("q", dqn_target, "huber", 10.0, False, False)
    assert fast.fast is not None and fast.fast.twin is None
    assert make_agent("q", functools.partial(dqn_target), "huber", 10.0, False, True).fast.twin is not None
    for step in range(3):
        (m_fast, _), (m_ref, _) = fast.learn(batch(step, False)), ref.learn(batch(step, False))
        assert torch.allclose(m_fast["loss"], m_ref["loss"], rtol=1e-4, atol=1e-6)


def test_adam_step_equals_torch_adam_bit_for_bit_through_loads_and_schedules():
    """AdamStep makes Adam.step's own call: same parameters, state and step counts, also after the state is
    loaded from a state dict and with a learning-rate schedule; other optimizers step as they are."""
    from rlzoo.nets.numpy_backend import AdamStep

    def make():
        torch.manual_seed(0)
        params = [torch.nn.Parameter(torch.randn(3, 8, 5)), torch.nn.Parameter(torch.randn(3, 1, 8))]
        opt = torch.optim.Adam(params, lr=1e-2, fused=True)
        return params, opt, torch.optim.lr_scheduler.LinearLR(opt, 1.0, 0.1, total_iters=20)

    (p_ref, o_ref, s_ref), (p_fast, o_fast, s_fast) = make(), make()
    step = AdamStep(o_fast)
    assert step.plain and not AdamStep(torch.optim.SGD(p_ref, lr=0.1)).plain
    for t in range(12):
        grads = [torch.randn_like(p) for p in p_ref]
        for p, g in zip(p_ref, grads):
            p.grad = g.clone()
        for p, g in zip(p_fast, grads):
            p.grad = g.clone()
        o_ref.step()
        step()
        s_ref.step()
        s_fast.step()
        if t == 5:  # a resume: the state tensors are replaced
            o_fast.load_state_dict(copy.deepcopy(o_fast.state_dict()))
        assert all(torch.equal(a, b) for a, b in zip(p_ref, p_fast)), t
    for a, b in zip(p_ref, p_fast):
        for key in ("exp_avg", "exp_avg_sq", "step"):
            assert torch.equal(o_ref.state[a][key], o_fast.state[b][key]), key
