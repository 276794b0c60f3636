"""Atari 2600 games (ALE) as population vectors with the DeepMind preprocessing.

``make_atari_env`` returns ``(envs, spec)`` like every rlzoo environment factory: ``P`` games, member
``i`` seeded by the loop with ``seed + i``, same-step autoreset (``info["final_obs"]`` holds the true
last observation). Observations are ``[stack, 84, 84]`` uint8; a new game's first stack is zero
padded (``[0, 0, 0, f0]``). Rewards are the raw game score: the loop clips them for learning
(``env.clip_rewards``) and logs the unclipped score.

Two backends do the same preprocessing:
- ``ale_vector`` (default): ``ale_py.vector_env.AtariVectorEnv``, preprocessing in C++ threads;
- ``gymnasium``: ``gymnasium.vector.SyncVectorEnv`` over ``AtariPreprocessing`` + ``FrameStackObservation``.
``benchmarks/throughput_atari.py --envs-only`` times both (README, "Pixels").

Episodic life (off by default) is done here, not by the ALE (whose ``episodic_life`` resets the game
on a life loss): a lost life is reported as ``terminated`` to the learner, the game goes on, and
``info["game_over"]`` marks the steps where the game really ended, which is what the loop logs as an
episode.
"""

from __future__ import annotations

import re

import gymnasium as gym
import numpy as np

from rlzoo.envs import SAME_STEP, EnvSpec
from rlzoo.errors import ConfigError


def rom_name(env_id: str) -> str:
    """``ALE/Pong-v5`` / ``PongNoFrameskip-v4`` / ``Pong`` / ``pong`` -> ``pong``;
    ``ALE/MontezumaRevenge-v5`` -> ``montezuma_revenge``."""
    name = env_id.split("/")[-1]
    name = re.sub(r"(NoFrameskip)?-v\d+$", "", name)
    if name.islower() or "_" in name:
        return name.lower()
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def _check_rom(env_id: str) -> str:
    from ale_py import roms
    game = rom_name(env_id)
    if game not in roms.get_all_rom_ids():
        close = [r for r in roms.get_all_rom_ids() if r[:3] == game[:3]][:8]
        raise ConfigError(f"env.id={env_id!r} is not an Atari game that ale-py ships (looked for ROM {game!r}). "
                          f"Use an id like ALE/Pong-v5 or ALE/Breakout-v5{'; similar: ' + ', '.join(close) if close else ''}")
    return game


class FireOnReset(gym.Wrapper):
    """Press FIRE after every reset (games that wait for it, e.g. Breakout); gymnasium backend only."""

    def reset(self, **kwargs):
        obs, info = self.env.reset(**kwargs)
        obs, _, terminated, truncated, info = self.env.step(1)
        if terminated or truncated:
            obs, info = self.env.reset()
        return obs, info


class PopulationAtari(gym.vector.VectorWrapper):
    """Adapts a vector Atari env to the loop: list seeds, episodic life, ``info["game_over"]``.

    The emulators' state cannot be saved as plain data: ``exact_state`` is False, ``state_dict()`` is ``{}``
    and ``load_state_dict`` does nothing (a resumed run restarts the games).
    """

    exact_state = False

    def __init__(self, env: gym.vector.VectorEnv, episodic_life: bool, array_seeds: bool):
        super().__init__(env)
        self.episodic_life, self.array_seeds = episodic_life, array_seeds
        self.lives = np.zeros(self.num_envs, dtype=np.int64)

    def reset(self, *, seed=None, options=None):
        if self.array_seeds and isinstance(seed, (list, tuple)):
            seed = np.asarray(seed, dtype=np.int64)
        obs, info = self.env.reset(seed=seed, options=options)
        self.lives = np.asarray(info.get("lives", self.lives)).astype(np.int64)
        return obs, info

    def step(self, actions):
        obs, reward, terminated, truncated, info = self.env.step(actions)
        info = dict(info)
        game_over = np.asarray(terminated | truncated)
        info["game_over"] = game_over
        if self.episodic_life and "lives" in info:
            lives = np.asarray(info["lives"]).astype(np.int64)
            life_lost = (lives < self.lives) & ~game_over
            self.lives = lives
            if life_lost.any():
                terminated = terminated | life_lost
                final = info.get("final_obs")
                if final is None:
                    final = np.array(obs, copy=True)
                else:
                    final = np.array(final, copy=True)
                for i in np.flatnonzero(life_lost):
                    final[i] = obs[i]  # the game goes on: the last observation of this life is the current one
                info["final_obs"] = final
        return obs, reward, terminated, truncated, info

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


def make_atari_env(id: str, num_envs: int, backend: str = "ale_vector", noop_max: int = 30, frame_skip: int = 4,
                   max_pool: bool = True, screen_size: int = 84, grayscale: bool = True, frame_stack: int = 4,
                   repeat_action_probability: float = 0.0, max_episode_frames: int = 108_000,
                   episodic_life: bool = False, fire_reset: bool = False, full_action_space: bool = False,
                   num_threads: int = 0):
    """``num_envs`` copies of one Atari game with the DeepMind (Mnih et al. 2015) preprocessing.

    Args:
        id: the game, e.g. ``ALE/Pong-v5`` (the version's own defaults are not used; every setting
            comes from the arguments below).
        backend: ``ale_vector`` (ale-py's C++ vector env) or ``gymnasium`` (python wrappers).
        noop_max: up to this many no-op actions after a reset (30 in the paper).
        frame_skip: repeat each action this many frames (4), returning the max over the last two
            frames when ``max_pool``.
        screen_size, grayscale, frame_stack: 84x84 grayscale, stacks of 4.
        repeat_action_probability: sticky actions; 0 in the DQN papers, 0.25 recommended by Machado
            et al. 2018.
        max_episode_frames: emulator frames after which a game is truncated (108,000 = 30 minutes).
        episodic_life: report a lost life as terminal to the learner (the game continues).
        fire_reset: press FIRE after a reset.
        num_threads: C++ threads of the ``ale_vector`` backend (0: its default).
    """
    game = _check_rom(id)
    if not grayscale:
        raise ConfigError("env.grayscale=false is not supported: the Nature CNN and replay=frames take "
                          "grayscale [stack, H, W] frames")
    if backend == "ale_vector":
        from ale_py.vector_env import AtariVectorEnv
        envs = AtariVectorEnv(game, num_envs, num_threads=num_threads, max_num_frames_per_episode=max_episode_frames,
                              repeat_action_probability=repeat_action_probability,
                              full_action_space=full_action_space, autoreset_mode=SAME_STEP,
                              img_height=screen_size, img_width=screen_size, grayscale=True, stack_num=frame_stack,
                              frameskip=frame_skip, maxpool=max_pool, noop_max=noop_max, episodic_life=False,
                              reward_clipping=False, use_fire_reset=fire_reset)
    elif backend == "gymnasium":
        if not max_pool:
            raise ConfigError("env.max_pool=false needs env.backend=ale_vector (gymnasium's AtariPreprocessing "
                              "always max-pools)")
        import ale_py
        try:
            import cv2  # noqa: F401  (AtariPreprocessing resizes with OpenCV)
        except ImportError:
            raise ConfigError("env.backend=gymnasium needs OpenCV: pip install opencv-python-headless "
                              "(or use env.backend=ale_vector, which needs nothing more)") from None
        gym.register_envs(ale_py)

        def thunk():
            env = gym.make("ALE/" + "".join(w.title() for w in game.split("_")) + "-v5", frameskip=1,
                           repeat_action_probability=repeat_action_probability, full_action_space=full_action_space,
                           max_num_frames_per_episode=max_episode_frames, disable_env_checker=True)
            env = gym.wrappers.AtariPreprocessing(env, noop_max=noop_max, frame_skip=frame_skip,
                                                  screen_size=screen_size, grayscale_obs=True)
            if fire_reset:
                env = FireOnReset(env)
            return gym.wrappers.FrameStackObservation(env, frame_stack, padding_type="zero")

        envs = gym.vector.SyncVectorEnv([thunk for _ in range(num_envs)], autoreset_mode=SAME_STEP)
    else:
        raise ConfigError(f"env.backend must be 'ale_vector' or 'gymnasium', got {backend!r}")
    envs = PopulationAtari(envs, episodic_life=episodic_life, array_seeds=backend == "ale_vector")
    spec = EnvSpec(id, (frame_stack, screen_size, screen_size), np.dtype(np.uint8),
                   int(envs.single_action_space.n), pixels=True)
    return envs, spec
