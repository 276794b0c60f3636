"""rlzoo.optim.Adam against torch.optim.Adam."""

import copy

import pytest
import torch

from rlzoo import optim


def params(seed):
    g = torch.Generator().manual_seed(seed)
    return [torch.nn.Parameter(torch.randn(3, 5, 4, generator=g)), torch.nn.Parameter(torch.randn(3, 1, 4, generator=g))]


def run(opt_cls, steps=30, fused_kernel=True, **kw):
    ps = params(0)
    opt = opt_cls(ps, **kw)
    if not fused_kernel:
        opt._lists = [[*entry[:-1], False] for entry in opt._prepare()]
    g = torch.Generator().manual_seed(1)
    for _ in range(steps):
        opt.zero_grad()
        for p in ps:
            p.grad = torch.randn(p.shape, generator=g)
        opt.step()
    return ps, opt


@pytest.mark.parametrize("fused_kernel", [True, False])
def test_matches_torch_adam(fused_kernel):
    kw = dict(lr=3e-3, betas=(0.8, 0.99), eps=1e-6)
    ours, _ = run(optim.Adam, fused_kernel=fused_kernel, **kw)
    ref, _ = run(torch.optim.Adam, **kw)
    start = params(0)
    for a, b, s in zip(ours, ref, start):
        assert (a - s).abs().max() > 1e-2  # it moved
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-6)


def test_state_dict_round_trip_continues_identically():
    ps, opt = run(optim.Adam, steps=5, lr=1e-2)
    saved_params = [p.detach().clone() for p in ps]
    state = copy.deepcopy(opt.state_dict())
    assert state["state"][0]["step"].item() == 5 and set(state["state"][0]) == {"step", "exp_avg", "exp_avg_sq"}
    grads = [torch.ones_like(p) for p in ps]
    for p, gr in zip(ps, grads):
        p.grad = gr
    opt.step()
    expected = [p.detach().clone() for p in ps]
    fresh = [torch.nn.Parameter(p.clone()) for p in saved_params]
    opt2 = optim.Adam(fresh, lr=1e-2)
    opt2.load_state_dict(state)
    for p, gr in zip(fresh, grads):
        p.grad = gr
    opt2.step()
    for a, b in zip(fresh, expected):
        assert torch.equal(a, b)


def test_parameters_without_gradient_are_left_alone():
    ps = params(2)
    before = ps[1].detach().clone()
    opt = optim.Adam(ps, lr=0.1)
    ps[0].grad = torch.ones_like(ps[0])
    opt.step()
    assert torch.equal(ps[1], before) and opt.state[ps[1]]["step"].item() == 0
    assert opt.state[ps[0]]["step"].item() == 1


@pytest.mark.parametrize("kw", [dict(lr=-1.0), dict(lr=0.0), dict(betas=(1.0, 0.9)), dict(eps=-1.0)])
def test_rejects_bad_hyper_parameters(kw):
    with pytest.raises(ValueError):
        optim.Adam(params(0), **kw)
