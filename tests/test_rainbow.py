"""Rainbow (agent=rainbow): the six components it composes, each removable by one override, and real runs."""

from __future__ import annotations

import functools

import pandas as pd
import pytest
import torch

from rlzoo import targets
from rlzoo.agents.c51 import C51Agent
from rlzoo.agents.dqn import DQNAgent
from rlzoo.agents.rainbow import rainbow_agent
from rlzoo.nets import (MLP, CategoricalHead, DuelingCategoricalHead, DuelingHead, ObservationEncoder, PopLinear,
                        PopNoisyLinear, QHead, QNetwork, make_head, member_generators)
from rlzoo.replay import PrioritizedSampler, UniformSampler
from rlzoo.train import build, train
from conftest import make_cfg
from test_c51 import member_equals_solo, short

FULL = dict(head=DuelingCategoricalHead, agent=C51Agent, target=targets.double_categorical_target, noisy=True,
            n_step=3, sampler=PrioritizedSampler)
# Each ablation: the one override, and what it changes in the built run (everything else stays as FULL).
ABLATIONS = {
    "full": ([], {}),
    "no_double": (["agent.double=false"], dict(target=targets.categorical_dqn_target)),
    "no_dueling": (["agent.dueling=false"], dict(head=CategoricalHead)),
    "no_distributional": (["agent.distributional=false"], dict(head=DuelingHead, agent=DQNAgent,
                                                               target=targets.double_dqn_target)),
    "no_noisy": (["agent/exploration=epsilon"], dict(noisy=False)),
    "no_multistep": (["n_step=1"], dict(n_step=1)),
    "no_prioritized": (["replay/sampler=uniform"], dict(sampler=UniformSampler)),
}


def built_parts(run):
    agent = run.agent
    layers = [m for m in agent.q_net.head.modules() if isinstance(m, (PopLinear, PopNoisyLinear))]
    target = getattr(agent.target_fn, "func", agent.target_fn)
    return dict(head=type(agent.q_net.head), agent=type(agent), target=target,
                noisy=all(isinstance(m, PopNoisyLinear) for m in layers) and agent.self_exploring,
                n_step=(run.replay.storage.writer.n if run.replay.storage.writer else 1), sampler=type(run.replay.sampler))


@pytest.mark.parametrize("name", list(ABLATIONS))
@pytest.mark.parametrize("style", ["override", "ablation group"])
def test_one_override_removes_exactly_one_component(tmp_path, name, style):
    overrides, changed = ABLATIONS[name]
    if style == "ablation group":
        overrides = [f"+ablation={'none' if name == 'full' else name}"]
    run = build(make_cfg("agent=rainbow", "n_seeds=2", *overrides), tmp_path, "rainbow")
    try:
        got = built_parts(run)
        assert got == {**FULL, **changed}
        if name != "no_noisy":  # with noisy nets the head's every layer is noisy, and no layer is without them
            assert not any(type(m) is PopLinear for m in run.agent.q_net.head.modules())
        if got["sampler"] is PrioritizedSampler:
            assert run.replay.sampler.alpha == 0.5  # Rainbow's priority exponent (Schaul et al.'s is 0.6)
    finally:
        run.close()


def test_minus_distributional_uses_the_scalar_loss_and_the_numpy_path_stays_off_with_noise(tmp_path):
    run = build(make_cfg("agent=rainbow", "agent.distributional=false", "loss=mse"), tmp_path / "a", "rainbow")
    assert run.agent.loss_fn is not None and run.agent.fast is None  # noisy layers: autograd
    run.close()
    # minus distributional and minus noisy: a plain dueling Double DQN, which the numpy fast path covers
    run = build(make_cfg("agent=rainbow", "agent.distributional=false", "agent/exploration=epsilon"), tmp_path / "b",
                "rainbow")
    assert type(run.agent) is DQNAgent and run.agent.fast is not None
    run.close()


@pytest.mark.parametrize("double, distributional, rule", [
    (True, True, targets.double_categorical_target), (False, True, targets.categorical_dqn_target),
    (True, False, targets.double_dqn_target), (False, False, targets.dqn_target)])
def test_target_rule_table(double, distributional, rule):
    assert targets.target_rule(double, distributional) is rule


@pytest.mark.parametrize("dueling, distributional, cls", [
    (True, True, DuelingCategoricalHead), (False, True, CategoricalHead), (True, False, DuelingHead),
    (False, False, QHead)])
def test_make_head_table(dueling, distributional, cls):
    head = make_head(8, 3, member_generators([0, 1]), dueling=dueling, distributional=distributional, num_atoms=5,
                     v_min=-1.0, v_max=1.0)
    assert type(head) is cls
    out = head(torch.zeros(2, 4, 8))
    assert out.shape == ((2, 4, 3, 5) if distributional else (2, 4, 3))


def test_a_plain_head_with_a_hidden_layer_is_refused_with_the_key():
    with pytest.raises(ValueError, match=r"agent\.head\.hidden=64"):
        make_head(8, 3, member_generators([0]), dueling=False, distributional=False, hidden=64)


def _net(head):
    gens = member_generators([0])
    enc = ObservationEncoder((4,))
    torso = MLP(enc.out_shape, gens, hidden_sizes=(8,))
    return QNetwork(enc, torso, head(torso.out_features, 2, gens))


@pytest.mark.parametrize("switches, head, rule, message", [
    (dict(distributional=True), QHead, targets.double_categorical_target, r"agent\.distributional=True"),
    (dict(distributional=False), functools.partial(CategoricalHead, num_atoms=5), targets.double_dqn_target,
     r"agent\.distributional=False"),
    (dict(dueling=True, distributional=False), QHead, targets.double_dqn_target, r"agent\.dueling=True"),
    (dict(double=True, dueling=False, distributional=False), QHead, targets.dqn_target, r"agent\.double=True"),
    (dict(double=False, dueling=False, distributional=False), QHead, targets.double_dqn_target,
     r"agent\.double=False"),
])
def test_parts_that_disagree_with_the_switches_are_refused(switches, head, rule, message):
    net = _net(head)
    with pytest.raises(ValueError, match=message):
        rainbow_agent(net, torch.optim.Adam(net.parameters()), rule, **switches)


def test_rainbow_population_member_equals_solo_run(tmp_path):
    args = ["agent=rainbow", "learning_starts=100"]
    pop = train(make_cfg(*short("seed=5", "n_seeds=3"), *args), tmp_path / "pop", "rainbow")
    solo = train(make_cfg(*short("seed=6", "n_seeds=1"), *args), tmp_path / "solo", "rainbow")
    member_equals_solo(pop, solo, tmp_path / "pop", tmp_path / "solo")


def test_rainbow_trains_on_minatar(tmp_path):
    parts = train(make_cfg("+experiment=minatar", "env.max_episode_steps=100", "agent=rainbow",
                           "agent.head.v_min=-10", "agent.head.v_max=10", *short("n_seeds=2", steps=300)),
                  tmp_path, "rainbow")
    assert isinstance(parts.agent, C51Agent) and parts.replay.storage.writer.n == 3
    metrics = pd.read_csv(tmp_path / "metrics.csv")
    assert metrics["loss"].notna().all() and (metrics["loss"] > 0).all()
