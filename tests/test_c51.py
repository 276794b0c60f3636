"""C51 (Bellemare et al. 2017): the categorical projection against worked examples, the cross-entropy loss,
Q as the expectation, Double C51's choice by the online network, the dueling distributional head's identity,
and the agent in real runs (population member = solo run, checkpoint/resume, CartPole and MinAtar)."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from rlzoo import loop
from rlzoo.agents.c51 import C51Agent
from rlzoo.io import checkpoint
from rlzoo.nets import (MLP, CategoricalHead, DuelingCategoricalHead, ObservationEncoder, QHead, QNetwork,
                        member_generators)
from rlzoo.nets.numpy_backend import NumpyNet
from rlzoo.replay import Batch
from rlzoo.target_sync import HardSync
from rlzoo.targets import categorical_dqn_target, categorical_projection, double_categorical_target
from rlzoo.train import train
from conftest import make_cfg, read_rows
from test_checkpoint import Killed, same_results, same_weights

Z = torch.tensor([-2.0, -1.0, 0.0, 1.0, 2.0])  # 5 atoms on [-2, 2], spacing 1


def t(*rows):
    """A float tensor: of one row if given one list, else of the rows given."""
    return torch.tensor(rows[0] if len(rows) == 1 else rows, dtype=torch.float32)


def test_projection_worked_examples():
    """By hand, with z = [-2, -1, 0, 1, 2]:
    (a) r=0.5, discount 0.5, p=[.1,.2,.3,.2,.2]: Tz = [-.5, 0, .5, 1, 1.5]. -.5 splits .05/.05 to z=-1/0; 0 keeps
        .2; .5 splits .15/.15 to 0/1; 1 keeps .2; 1.5 splits .1/.1 to 1/2 -> m = [0, .05, .4, .45, .1].
    (b) r=1.5, discount 1, p uniform .2: Tz = [-.5, .5, 1.5, 2.5, 3.5], the last two outside the support, clipped
        to 2 -> [0, .1, .1+.1, .1+.1, .1+.2+.2] = [0, .1, .2, .2, .5].
    (c) r=-3, discount .5, all mass on z=2: Tz = -2 -> m = [1, 0, 0, 0, 0]; r=-5: Tz = -4, clipped to -2: the same.
    (d) terminal (discount 0), r=.25: every atom lands on .25 -> .75 to z=0, .25 to z=1, whatever p."""
    reward = t([0.5, 1.5, -3.0, -5.0, 0.25])
    discount = t([0.5, 1.0, 0.5, 0.5, 0.0])
    probs = t([[.1, .2, .3, .2, .2], [.2] * 5, [0, 0, 0, 0, 1], [0, 0, 0, 0, 1], [.3, .1, .1, .2, .3]])
    m = categorical_projection(reward[None], discount[None], probs[None], Z)[0]
    expected = t([0, .05, .4, .45, .1], [0, .1, .2, .2, .5], [1, 0, 0, 0, 0], [1, 0, 0, 0, 0], [0, 0, .75, .25, 0])
    assert torch.allclose(m, expected, atol=1e-6)
    assert torch.allclose(m.sum(-1), torch.ones(5))
    # a number as discount: the same as a constant tensor
    assert torch.allclose(categorical_projection(reward[None], 0.5, probs[None], Z)[0, 0], expected[0], atol=1e-6)


def test_targets_choose_a_prime_and_zero_the_discount_at_terminals():
    """Two actions at s'. Under the target network a0 has the larger mean (all mass on z=2 against uniform),
    under the online network a1 does: C51 projects the target's distribution of a0, Double C51 that of a1.
    Terminal transitions keep only the reward."""
    p_target = torch.stack([t([0, 0, 0, 0, 1]), t([.2] * 5)])[None, None]  # [P=1, B=1, A=2, N=5]
    p_online = torch.stack([t([1, 0, 0, 0, 0]), t([0, 0, 0, 0, 1])])[None, None]
    r, gamma = t([0.0])[None], 0.5
    alive, dead = t([0.0])[None], t([1.0])[None]
    # not terminal: a0 -> Tz = 1 for every atom; a1 (uniform) -> Tz = [-1, -.5, 0, .5, 1]
    assert torch.allclose(categorical_dqn_target(r, alive, gamma, p_target, Z)[0, 0], t([0, 0, 0, 1, 0]))
    assert torch.allclose(double_categorical_target(r, alive, gamma, p_target, Z, p_online)[0, 0],
                          t([0, .3, .4, .3, 0]), atol=1e-6)
    for target in (categorical_dqn_target(r, dead, gamma, p_target, Z),
                   double_categorical_target(r, dead, gamma, p_target, Z, p_online)):
        assert torch.allclose(target[0, 0], t([0, 0, 1, 0, 0]))  # all mass at r = 0
    # a per-sample discount (n-step: gamma**k) is used as given
    assert torch.allclose(categorical_dqn_target(r, alive, t([0.25])[None], p_target, Z)[0, 0], t([0, 0, .5, .5, 0]))


P, B, A, N = 2, 8, 3, 11


def make_agent(head_cls=CategoricalHead, target_fn=categorical_dqn_target, seeds=(3, 4), **head_kwargs):
    gens = member_generators(list(seeds))
    net = QNetwork(ObservationEncoder((4,)), MLP((4,), gens, hidden_sizes=(16,)),
                   head_cls(16, A, gens, num_atoms=N, v_min=-5.0, v_max=5.0, **head_kwargs))
    return C51Agent(net, torch.optim.SGD(net.parameters(), lr=0.05), target_fn, target_sync=HardSync(every=100),
                    gamma=0.9, max_grad_norm=None, seeds=list(seeds))


def batch(seed, population=P, weights=None):
    g = torch.Generator().manual_seed(seed)
    return Batch(torch.randn(population, B, 4, generator=g), torch.randint(0, A, (population, B), generator=g),
                 torch.randn(population, B, generator=g), torch.randn(population, B, 4, generator=g),
                 (torch.rand(population, B, generator=g) < 0.3).float(), weights=weights)


def test_q_values_are_the_expected_return():
    agent = make_agent()
    obs = torch.randn(P, 4)
    with torch.no_grad():
        probs = agent.q_net(obs[:, None]).softmax(-1)[:, 0]  # [P, A, N]
    expected = (probs * torch.linspace(-5, 5, N)).sum(-1)
    assert torch.allclose(torch.from_numpy(agent.q_values(obs.numpy())), expected, atol=1e-6)
    assert probs.shape == (P, A, N) and torch.allclose(probs.sum(-1), torch.ones(P, A))


def test_the_loss_is_the_cross_entropy_to_the_projected_target():
    agent, b = make_agent(), batch(0)
    with torch.no_grad():
        log_p = agent.q_net(b.obs).log_softmax(-1)[torch.arange(P)[:, None], torch.arange(B), b.action]  # [P, B, N]
        p_next = agent.target_net(b.next_obs).softmax(-1)
    m = categorical_dqn_target(b.reward, b.terminated, 0.9, p_next, torch.linspace(-5, 5, N))
    ce = -(m * log_p).sum(-1)
    kl = (m * (torch.log(m.clamp_min(1e-30)) - log_p)).sum(-1)
    before = [p.detach().clone() for p in agent.q_net.parameters()]
    metrics, td = agent.learn(b)
    assert torch.allclose(metrics["loss"], ce.mean(1), atol=1e-5)
    assert torch.allclose(td, kl, atol=1e-5) and (td >= -1e-6).all()
    assert torch.allclose(metrics["q_mean"], (log_p.exp() * torch.linspace(-5, 5, N)).sum(-1).mean(1), atol=1e-5)
    assert all(not torch.equal(p0, p) for p0, p in zip(before, agent.q_net.parameters()))
    # importance weights scale each sample's loss; weight 0 on member 1 leaves its parameters where they were
    masked = make_agent()
    start = [p.detach().clone() for p in masked.q_net.parameters()]
    m2, _ = masked.learn(batch(0, weights=torch.tensor([[2.0] * B, [0.0] * B])))
    assert torch.allclose(m2["loss"], torch.stack([2 * ce[0].mean(), torch.tensor(0.0)]), atol=1e-5)
    for p0, p in zip(start, masked.q_net.parameters()):
        assert torch.equal(p[1], p0[1]) and not torch.equal(p[0], p0[0])


def test_an_n_step_batch_discounts_by_its_own_gamma_k():
    """A batch that carries per-sample discounts (n-step: gamma**k) is projected with them, not with gamma."""
    agent, b = make_agent(), batch(2)
    discount = torch.rand(P, B, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        p_next = agent.target_net(b.next_obs).softmax(-1)
    expected = categorical_dqn_target(b.reward, b.terminated, discount, p_next, torch.linspace(-5, 5, N))
    assert torch.allclose(agent.td_target(b._replace(discount=discount)), expected)
    assert not torch.allclose(agent.td_target(b), expected)


def test_double_c51_asks_the_online_network_for_a_prime(monkeypatch):
    """The agent gives a Double rule the online network's next-state probabilities, and only to such a rule."""
    seen = {}

    def spy(reward, terminated, gamma, p_next_target, support, p_next_online):
        seen["online"] = p_next_online
        return double_categorical_target(reward, terminated, gamma, p_next_target, support, p_next_online)

    agent, b = make_agent(target_fn=spy), batch(1)
    with torch.no_grad():
        online = agent.q_net(b.next_obs).softmax(-1)
    agent.learn(b)
    assert agent.uses_online_next and torch.allclose(seen["online"], online)
    assert not make_agent().uses_online_next


def test_dueling_categorical_head_identity():
    """Rainbow's dueling head on the logits: for every member, state and atom, the mean over actions of the
    logits is V, and logits - V = A - mean_a A."""
    gens = member_generators([0, 1])
    for hidden in (0, 12):
        head = DuelingCategoricalHead(6, A, gens, num_atoms=N, v_min=-1.0, v_max=1.0, hidden=hidden)
        x = torch.randn(2, 5, 6)
        logits = head(x)
        v, a = head.streams(x)
        assert logits.shape == (2, 5, A, N) and v.shape == (2, 5, 1, N)
        assert torch.allclose(logits.mean(dim=-2, keepdim=True), v, atol=1e-6)
        assert torch.allclose(logits - v, a - a.mean(dim=-2, keepdim=True), atol=1e-6)


def test_categorical_head_shapes_and_hidden_layer():
    gens = member_generators([0, 1])
    x = torch.randn(2, 5, 6)
    for hidden in (0, 12):
        head = CategoricalHead(6, A, gens, num_atoms=N, v_min=-1.0, v_max=1.0, hidden=hidden)
        assert head(x).shape == (2, 5, A, N)
        assert len(list(head.children())) == (2 if hidden else 1)
    assert torch.equal(head.support, torch.linspace(-1, 1, N)) and "support" not in head.state_dict()


def test_bad_support_and_wrong_parts_fail_with_the_key():
    gens = member_generators([0])
    with pytest.raises(ValueError, match="v_min must be smaller"):
        CategoricalHead(4, 2, gens, v_min=1.0, v_max=1.0)
    with pytest.raises(ValueError, match="num_atoms must be >= 2"):
        CategoricalHead(4, 2, gens, num_atoms=1)
    net = QNetwork(ObservationEncoder((4,)), MLP((4,), gens, hidden_sizes=(8,)), QHead(8, 2, gens))
    with pytest.raises(ValueError, match="needs a distributional head"):
        C51Agent(net, torch.optim.SGD(net.parameters(), lr=0.1), categorical_dqn_target)
    with pytest.raises(ValueError, match="needs a distributional target rule"):
        make_agent(target_fn=lambda reward, terminated, gamma, q_next_target: reward)


def test_the_numpy_fast_path_declines_distributional_heads():
    """C51 runs on autograd: NumpyNet does not cover its heads, so the agent has no fast learner."""
    agent = make_agent()
    assert agent.fast is None and not NumpyNet.covers(agent.q_net)


def test_a_member_learns_what_it_learns_alone():
    """Member 1 of a population (seeds 3, 4) takes the same steps as a solo agent with seed 4 on member 1's data."""
    pop, solo = make_agent(seeds=(3, 4)), make_agent(seeds=(4,))
    for step in range(5):
        b = batch(step)
        pop.learn(b)
        solo.learn(Batch(*(x[1:] if isinstance(x, torch.Tensor) else x for x in b)))
    for p_pop, p_solo in zip(pop.q_net.parameters(), solo.q_net.parameters()):
        assert torch.allclose(p_pop[1], p_solo[0], atol=1e-6)


# -- real runs ---------------------------------------------------------------------------------------------

RAINBOWISH = ["agent=c51", "+agent/exploration=noisy",
              "agent.target_fn._target_=rlzoo.targets.double_categorical_target",
              "agent.head._target_=rlzoo.nets.DuelingCategoricalHead"]


def short(*extra, steps=600):
    return [f"total_steps={steps}", "learning_starts=100", "train_freq=1", "batch_size=16", "buffer_size=1000",
            "eval_every=300", "eval_episodes=2", "log_every=100", "target_sync=hard", "target_sync.every=20",
            "progress=false", *extra]


def member_equals_solo(pop, solo, pop_dir, solo_dir, member=1, seed="6"):
    """Member ``member`` of ``pop`` and the solo run ``solo`` play the same transitions and episodes and end with
    the same weights, to float32 rounding: on autograd the batched matmuls of P members may round differently
    from those of one (the numpy learner's test in test_loop.py is bit for bit). Noise draws are exact."""
    for key in ("obs", "action", "reward", "next_obs", "terminated"):
        assert torch.equal(getattr(pop.replay.storage, key)[member], getattr(solo.replay.storage, key)[0]), key
    numeric = ("q_estimate", "loss", "q_mean", "grad_norm")
    for name, drop in (("returns.csv", ("time",)), ("metrics.csv", ("time", "sps"))):
        rows_pop = [r for r in read_rows(pop_dir / name, drop=drop) if r["seed"] == seed]
        rows_solo = read_rows(solo_dir / name, drop=drop)
        assert len(rows_solo) > 5 and len(rows_pop) == len(rows_solo), name
        for a, b in zip(rows_pop, rows_solo):
            assert {k: v for k, v in a.items() if k not in numeric} == {k: v for k, v in b.items() if k not in numeric}
            for k in numeric:
                if a.get(k):
                    assert float(a[k]) == pytest.approx(float(b[k]), rel=1e-4, abs=1e-5), (name, k)
    for (name, p_pop), p_solo in zip(pop.agent.q_net.state_dict().items(), solo.agent.q_net.state_dict().values()):
        if name.endswith(("eps_in", "eps_out")):
            assert torch.equal(p_pop[member], p_solo[0]), name
        else:
            assert torch.allclose(p_pop[member], p_solo[0], atol=1e-5), name
    assert not torch.equal(pop.replay.storage.action[0], pop.replay.storage.action[member])


@pytest.mark.parametrize("component", [["agent=c51"], RAINBOWISH], ids=["c51", "c51+double+dueling+noisy"])
def test_population_member_equals_solo_run(tmp_path, component):
    pop = train(make_cfg(*component, *short("seed=5", "n_seeds=3")), tmp_path / "pop", "c51")
    solo = train(make_cfg(*component, *short("seed=6", "n_seeds=1")), tmp_path / "solo", "c51")
    member_equals_solo(pop, solo, tmp_path / "pop", tmp_path / "solo")


@pytest.mark.parametrize("component", [["agent=c51"], RAINBOWISH], ids=["c51", "c51+double+dueling+noisy"])
def test_killed_c51_run_resumes_to_the_same_rows_and_weights(tmp_path, monkeypatch, component):
    args = [*component, *short("n_seeds=2", "checkpoint_every=300", steps=800)]
    straight = train(make_cfg(*args), tmp_path / "straight", "c51")

    def crash(metrics, step, seeds):
        if step >= 750:
            raise Killed
    monkeypatch.setattr(loop, "check_finite", crash)
    with pytest.raises(Killed):
        train(make_cfg(*args), tmp_path / "killed", "c51")
    monkeypatch.undo()
    assert torch.load(tmp_path / "killed" / checkpoint.FILENAME, weights_only=True)["step"] == 600
    resumed = train(make_cfg(*args, "resume=true"), tmp_path / "killed", "c51")
    same_results(tmp_path / "straight", tmp_path / "killed")
    same_weights(straight.agent.state_dict(), resumed.agent.state_dict())


MINATAR = ["+experiment=minatar", "env.max_episode_steps=100"]


@pytest.mark.parametrize("component, env", [
    (["agent=c51"], ["env=cartpole"]),
    (RAINBOWISH, ["env=cartpole"]),
    (RAINBOWISH, MINATAR),
    (["agent=c51", "agent.head.v_min=-10", "agent.head.v_max=10"], MINATAR),  # the paper's Atari support
], ids=["c51-cartpole", "c51+double+dueling+noisy-cartpole", "c51+double+dueling+noisy-minatar", "c51-minatar"])
def test_composed_configs_train(tmp_path, component, env):
    parts = train(make_cfg(*env, *component, *short("n_seeds=2", steps=300)), tmp_path, "c51")
    assert parts.state.step == 300 and parts.agent.updates == 201
    assert isinstance(parts.agent, C51Agent) and parts.agent.fast is None
    metrics = pd.read_csv(tmp_path / "metrics.csv")
    assert metrics["loss"].notna().all() and (metrics["loss"] > 0).all()
    assert set(pd.read_csv(tmp_path / "returns.csv").phase) >= {"eval"}
