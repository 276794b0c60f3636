"""Environments save their own state: a population restored from ``state_dict()`` into a freshly built one
continues bit for bit (observations, rewards, terminations, truncations, final observations); environments
whose state cannot be saved say so (``exact_state`` False, ``state_dict() == {}``)."""

from __future__ import annotations

import io
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
import yaml
from hydra.utils import get_method

from rlzoo.envs import SAME_STEP, ChainMDP, SyncPopulation, make_cartpole, make_gym_env
from rlzoo.io import checkpoint

CONF_ENV = Path(__file__).resolve().parents[1] / "conf" / "env"

FACTORIES = {
    "cartpole": lambda: make_cartpole(3),
    "frozenlake-slippery": lambda: make_gym_env("FrozenLake-v1", 3, kwargs={"is_slippery": True}),
    "acrobot": lambda: make_gym_env("Acrobot-v1", 2, max_episode_steps=40),
    "chain": lambda: make_gym_env("rlzoo/Chain-v0", 2, max_episode_steps=8, kwargs={"n": 4}),
}


def assert_same(a, b, where="step"):
    """Equal in type, shape and bits, through tuples, dicts and object arrays (``info["final_obs"]``)."""
    if isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), (where, a.keys(), getattr(b, "keys", lambda: b)())
        for k in a:
            assert_same(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, (tuple, list)):
        assert type(a) is type(b) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{where}[{i}]")
    elif isinstance(a, np.ndarray) and a.dtype == object:
        assert isinstance(b, np.ndarray) and b.dtype == object and a.shape == b.shape, where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{where}[{i}]")
    elif isinstance(a, np.ndarray):
        assert isinstance(b, np.ndarray) and (a.dtype, a.shape) == (b.dtype, b.shape), where
        assert a.tobytes() == b.tobytes(), (where, a, b)
    else:
        assert type(a) is type(b) and a == b, (where, a, b)


def through_checkpoint_file(state: dict) -> dict:
    """What a checkpoint does with an environment's state: plain containers, torch.save, a safe load."""
    buf = io.BytesIO()
    torch.save(checkpoint.to_plain(state), buf)
    buf.seek(0)
    return checkpoint.from_plain(torch.load(buf, weights_only=True))


@pytest.mark.parametrize("via_file", [False, True], ids=["in-memory", "via-file"])
@pytest.mark.parametrize("name", list(FACTORIES))
def test_a_restored_population_continues_bit_for_bit(name, via_file):
    envs, spec = FACTORIES[name]()
    assert envs.exact_state is True
    P = envs.num_envs
    rng = np.random.default_rng(1)
    envs.reset(seed=[11 + i for i in range(P)])
    for _ in range(int(rng.integers(20, 60))):
        envs.step(rng.integers(0, spec.num_actions, P))
    state = envs.state_dict()
    if via_file:
        state = through_checkpoint_file(state)

    actions = [rng.integers(0, spec.num_actions, P) for _ in range(150)]
    expected = [envs.step(a) for a in actions]  # steps after the snapshot must not change it
    ends = sum(int((te | tr).sum()) for _, _, te, tr, _ in expected)
    assert ends >= 2, f"{name}: no episode ended, so final observations went untested"

    # two fresh populations from the same dict: neither shares generators or arrays with it
    restored = [FACTORIES[name]()[0] for _ in range(2)]
    for r in restored:
        r.load_state_dict(state)
    for t, a in enumerate(actions):
        for r in restored:
            assert_same(expected[t], r.step(a), f"{name} step {t}")


def test_cartpole_state_dict_holds_state_step_counts_and_generators():
    envs, _ = make_cartpole(2)
    envs.reset(seed=[0, 1])
    envs.step(np.array([1, 0]))
    state = envs.state_dict()
    assert set(state) == {"state", "elapsed", "rngs"}
    assert state["state"].shape == (2, 4) and state["state"].dtype == np.float64
    assert state["elapsed"].tolist() == [1, 1]
    assert all(isinstance(g, np.random.Generator) for g in state["rngs"])
    assert state["rngs"][0] is not envs.rngs[0]  # a copy


def test_the_wrapper_changes_nothing_the_loop_sees():
    """``make_gym_env``'s population returns what a bare SyncVectorEnv returns, info keys included, and
    forwards the vector env's attributes."""
    envs, spec = make_gym_env("FrozenLake-v1", 3, max_episode_steps=12, kwargs={"is_slippery": True})
    bare = gym.vector.SyncVectorEnv([lambda: gym.make("FrozenLake-v1", max_episode_steps=12, is_slippery=True,
                                                      disable_env_checker=True) for _ in range(3)],
                                    autoreset_mode=SAME_STEP)
    assert isinstance(envs, SyncPopulation) and isinstance(envs, gym.vector.VectorEnv)
    assert envs.metadata["autoreset_mode"] == SAME_STEP and envs.autoreset_mode == SAME_STEP
    assert envs.num_envs == 3 and len(envs.envs) == 3 and envs.unwrapped is envs.env
    assert envs.single_action_space == bare.single_action_space
    assert envs.single_observation_space == bare.single_observation_space
    assert_same(envs.reset(seed=[4, 5, 6]), bare.reset(seed=[4, 5, 6]), "reset")
    rng, keys = np.random.default_rng(0), set()
    for t in range(200):
        a = rng.integers(0, spec.num_actions, 3)
        out = envs.step(a)
        assert_same(out, bare.step(a), f"step {t}")
        keys |= set(out[4])
    assert {"final_obs", "_final_obs", "final_info"} <= keys
    with pytest.raises(AttributeError):
        envs.no_such_attribute
    envs.close()
    assert envs.closed


def test_loading_a_state_of_another_population_size_is_refused():
    for build in (lambda n: make_cartpole(n), lambda n: make_gym_env("FrozenLake-v1", n)):
        three, _ = build(3)
        three.reset(seed=[0, 1, 2])
        two, _ = build(2)
        with pytest.raises(ValueError):
            two.load_state_dict(three.state_dict())


class _Opaque(gym.Env):
    """A game whose state is a Python object: it cannot be saved as plain data."""

    observation_space = gym.spaces.Discrete(2)
    action_space = gym.spaces.Discrete(2)

    def __init__(self):
        self.game = object()

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return 0, {}

    def step(self, action):
        return 0, 0.0, False, False, {}


gym.register("rlzoo-test/Opaque-v0", entry_point=_Opaque)


def test_a_gymnasium_env_with_unsaveable_state_reports_it():
    envs, _ = make_gym_env("rlzoo-test/Opaque-v0", 2)
    envs.reset(seed=[0, 1])
    assert envs.exact_state is False and envs.state_dict() == {}
    envs.load_state_dict({})  # nothing to do


def _steps(envs, actions):
    return [envs.step(a) for a in actions]


def test_minatar_and_atari_report_inexact_state():
    from rlzoo.envs.minatar import make_minatar_env

    envs, spec = make_minatar_env("breakout", 2)
    assert envs.exact_state is False and envs.state_dict() == {}
    rng = np.random.default_rng(0)
    actions = [rng.integers(0, spec.num_actions, 2) for _ in range(30)]
    twin, _ = make_minatar_env("breakout", 2)
    envs.reset(seed=[3, 4]), twin.reset(seed=[3, 4])
    envs.load_state_dict({})  # does nothing: the episodes go on as if it had not been called
    for a, b in zip(_steps(envs, actions), _steps(twin, actions)):
        assert_same(a, b)

    from rlzoo.envs.atari import make_atari_env

    atari, _ = make_atari_env("ALE/Pong-v5", 1, num_threads=1)
    try:
        assert atari.exact_state is False and atari.state_dict() == {}
        atari.load_state_dict({})
    finally:
        atari.close()


def test_chain_is_importable_where_it_was_and_registered():
    from rlzoo.envs import toy

    assert ChainMDP is toy.ChainMDP
    env = gym.make("rlzoo/Chain-v0", n=3)
    assert isinstance(env.unwrapped, ChainMDP) and env.spec.max_episode_steps == 100


@pytest.mark.parametrize("path", sorted(CONF_ENV.glob("*.yaml")), ids=lambda p: p.stem)
def test_env_config_targets_resolve(path):
    assert callable(get_method(yaml.safe_load(path.read_text())["_target_"]))


def test_missing_simulator_names_the_extra_to_install(monkeypatch):
    """A registered id whose simulator is not installed (Box2D for LunarLander) says what to install,
    not that the id is unknown."""
    import gymnasium as gym

    from rlzoo.envs.gym import make_gym_env
    from rlzoo.errors import ConfigError

    def missing(*args, **kwargs):
        raise gym.error.DependencyNotInstalled("Box2D is not installed")

    monkeypatch.setattr(gym, "make", missing)
    with pytest.raises(ConfigError) as e:
        make_gym_env("LunarLander-v3", num_envs=1)
    msg = str(e.value)
    assert "\n" not in msg and 'pip install -e ".[box2d]"' in msg and "Box2D is not installed" in msg


def test_lunarlander_runs_when_box2d_is_installed():
    pytest.importorskip("Box2D", reason="the box2d extra is not installed")
    from rlzoo.envs.gym import make_gym_env

    envs, spec = make_gym_env("LunarLander-v3", num_envs=2)
    obs, _ = envs.reset(seed=[0, 1])
    assert obs.shape == (2, 8) and spec.num_actions == 4
    envs.close()
