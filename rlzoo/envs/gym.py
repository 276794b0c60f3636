"""Any registered gymnasium id as a population vector: a ``SyncVectorEnv`` (same-step autoreset) wrapped in
``SyncPopulation``, which saves and restores the state of every member.

The state of a gymnasium environment is not declared anywhere, so ``SyncPopulation`` collects it: the
plain attributes (numbers, strings, numeric arrays, numpy generators, and lists/tuples/dicts of them) of
the vector env and of every layer of every member, from the outermost wrapper (``TimeLimit``'s step count,
``OrderEnforcing``'s flag) down to the base env (its state and ``np_random``). Spaces, specs, metadata,
the wrapped envs and callables are constants, not state. An attribute that is neither (an emulator, a
physics engine, a Python game object) makes the state unsaveable: ``exact_state`` is False and
``state_dict()`` is ``{}``; a resumed run then restarts those episodes.
"""

from __future__ import annotations

import copy
from typing import Any

import gymnasium as gym
import numpy as np

from rlzoo.envs import SAME_STEP, spec_from_spaces
from rlzoo.errors import ConfigError

_SIMPLE = (bool, int, float, str, type(None), np.generic, np.random.Generator)
_CONSTANT = (gym.Space, gym.envs.registration.EnvSpec, gym.Env, gym.vector.AutoresetMode)  # not state
_CONSTANT_KEYS = ("env_fns", "_saved_kwargs", "spec", "metadata")


def _simple(v) -> bool:
    if isinstance(v, _SIMPLE):
        return True
    if isinstance(v, np.ndarray):
        return v.dtype.kind in "biuf"
    if isinstance(v, (list, tuple)):
        return all(_simple(x) for x in v)
    if isinstance(v, dict):
        return all(isinstance(k, (str, int)) and _simple(x) for k, x in v.items())
    return False


def _layer_state(layer) -> dict | None:
    """The attributes of one env or wrapper that can be saved; None if some attribute that may be state
    cannot (an emulator, a Python object of the game)."""
    out = {}
    for key, value in vars(layer).items():
        if _simple(value):
            out[key] = value
        elif key in _CONSTANT_KEYS or isinstance(value, _CONSTANT) or callable(value) or (
                isinstance(value, np.ndarray) and value.dtype.kind in "SU"):  # FrozenLake's map: a constant
            continue
        elif isinstance(value, list) and all(isinstance(v, gym.Env) for v in value):  # SyncVectorEnv.envs
            continue
        else:
            return None
    return out


def _layers(env) -> list:
    """A member's wrappers, outermost first, then the base env."""
    layers = [env]
    while isinstance(layers[-1], gym.Wrapper):
        layers.append(layers[-1].env)
    return layers


def _set_attrs(obj, state: dict) -> None:
    for key, value in state.items():
        current = vars(obj).get(key)
        if isinstance(current, np.ndarray) and isinstance(value, np.ndarray) and current.shape == value.shape:
            current[...] = value  # in place: other objects may hold this array
        else:
            vars(obj)[key] = value


class SyncPopulation(gym.vector.VectorWrapper):
    """A ``SyncVectorEnv`` that can ``state_dict()`` / ``load_state_dict()`` its members (see the module
    docstring for what is saved). Steps, resets, observations, rewards and infos are the vector env's own,
    unchanged; other attributes (``envs``, ``call``, ``autoreset_mode``, ...) are forwarded to it.

    ``saveable=False`` declares the state unsaveable without looking (environments known to hold
    objects that cannot be saved as plain data).
    """

    def __init__(self, env: gym.vector.SyncVectorEnv, saveable: bool = True):
        super().__init__(env)
        self.saveable = bool(saveable)

    # Plain delegation, without VectorWrapper's extra layer of casts: the loop calls these every step.
    def step(self, actions):
        return self.env.step(actions)

    def reset(self, *, seed=None, options=None):
        return self.env.reset(seed=seed, options=options)

    def __getattr__(self, name: str) -> Any:
        # Only called for names not found on the wrapper; private names are not forwarded.
        if name.startswith("_") or "env" not in vars(self):
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
        return getattr(self.env, name)

    def _collect(self) -> dict | None:
        if not self.saveable:
            return None
        vector = _layer_state(self.env)
        members = [[_layer_state(layer) for layer in _layers(e)] for e in self.env.envs]
        if vector is None or any(s is None for m in members for s in m):
            return None
        return {"vector": vector, "members": members}

    @property
    def exact_state(self) -> bool:
        """True when ``state_dict()`` holds everything the members need to continue bit for bit."""
        return self._collect() is not None

    def state_dict(self) -> dict:
        """``{"vector": {attr: value}, "members": [[{attr: value} per layer] per member]}`` (a copy), or ``{}``
        when the state cannot be saved."""
        state = self._collect()
        return {} if state is None else copy.deepcopy(state)

    def load_state_dict(self, state: dict) -> None:
        """Put a ``state_dict()`` back (``{}``: nothing was saved, nothing to do)."""
        if not state:
            return
        state = copy.deepcopy(state)  # the env must not share arrays or generators with the caller's dict
        members = state["members"]
        if len(members) != self.num_envs:
            raise ValueError(f"the saved state has {len(members)} members, this environment {self.num_envs}")
        for e, member in zip(self.env.envs, members):
            if len(member) != len(_layers(e)):
                raise ValueError(f"a saved member has {len(member)} wrapper layers, this environment's "
                                 f"{len(_layers(e))}")
        _set_attrs(self.env, state["vector"])
        for e, member in zip(self.env.envs, members):
            for layer, layer_state in zip(_layers(e), member):
                _set_attrs(layer, layer_state)


def _make_one(env_id: str, max_episode_steps: int | None, kwargs: dict[str, Any]):
    def thunk():
        return gym.make(env_id, max_episode_steps=max_episode_steps, disable_env_checker=True, **kwargs)
    return thunk


def make_gym_env(id: str, num_envs: int, max_episode_steps: int | None = None,
                 obs_bounds: dict | None = None, kwargs: dict[str, Any] | None = None):
    """Any registered gymnasium id with Discrete actions and Box or Discrete observations.

    ``obs_bounds`` ({low: [...], high: [...]}) gives finite ranges for flat observations whose space is
    unbounded (CartPole's velocities); only the Q-table's discretiser uses them.
    """
    kwargs = dict(kwargs or {})
    try:
        probe = gym.make(id, disable_env_checker=True, **kwargs)
    except gym.error.DependencyNotInstalled as e:  # registered, but its simulator is not installed
        hint = ' For Box2D tasks (LunarLander, BipedalWalker, CarRacing): pip install -e ".[box2d]".'
        raise ConfigError(f"gymnasium cannot make {id!r}: a package it needs is missing ({e}).{hint}") from None
    except gym.error.Error as e:  # unknown id, missing version, bad kwargs
        raise ConfigError(f"gymnasium cannot make {id!r}: {e}. Set env.id to a registered id "
                          "(e.g. CartPole-v1, Acrobot-v1, FrozenLake-v1)") from None
    except TypeError as e:
        raise ConfigError(f"gymnasium cannot make {id!r} with env.kwargs={kwargs}: {e}") from None
    spec = spec_from_spaces(id, probe.observation_space, probe.action_space, obs_bounds)
    probe.close()
    envs = gym.vector.SyncVectorEnv([_make_one(id, max_episode_steps, kwargs) for _ in range(num_envs)],
                                    autoreset_mode=SAME_STEP)
    return SyncPopulation(envs), spec
