"""Run-directory policy: names that say what ran, and what a sweep prints at its start and end.

Two OmegaConf resolvers, registered when this module is imported (``rlzoo.train`` imports it), name run
directories in conf/config.yaml:

- ``${rlzoo_env:${env}}``: the environment's id made path-safe, from the resolved env config, not the name of
  its config group: ``CartPole-v1``, ``ALE-Pong-v5``, ``MinAtar-breakout``, ``FrozenLake-v1``;
- ``${rlzoo_seeds:${seed},${n_seeds}}``: ``seed3`` for one member, ``seed0-9`` for a population of ten.

``SweepReport`` is a Hydra callback (``hydra.callbacks`` in conf/config.yaml): a sweep (``-m``) prints its
directory when it starts and, when it ends, one line per run with its last and best evaluation and the
commands that look at the whole sweep.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

# Factories whose config has neither ``id`` nor ``game``: the environment they make.
FACTORY_ENV_IDS = {"rlzoo.envs.cartpole.make_cartpole": "CartPole-v1"}


def path_safe(name: str) -> str:
    """A name usable as one path component: ``/`` and other unsafe characters become ``-``."""
    safe = re.sub(r"[^A-Za-z0-9._+=-]+", "-", str(name)).strip("-.")
    return safe or "env"


def env_name(env) -> str:
    """The id of the environment an env config makes: its ``id`` (``ALE/Pong-v5`` -> ``ALE-Pong-v5``),
    ``MinAtar-<game>`` for a MinAtar ``game``, or the id a known factory makes (rlzoo's CartPole)."""
    def get(key):
        try:
            if isinstance(env, DictConfig) and OmegaConf.is_missing(env, key):
                return None
            return env.get(key) if hasattr(env, "get") else None
        except Exception:  # noqa: BLE001 -- an unresolvable value: name the directory without it
            return None
    if get("id") is not None:
        return path_safe(get("id"))
    if get("game") is not None:
        return path_safe(f"MinAtar-{get('game')}")
    target = get("_target_")
    if target in FACTORY_ENV_IDS:
        return FACTORY_ENV_IDS[target]
    return path_safe(str(target).rsplit(".", 1)[-1]) if target else "env"


def seed_range(seed, n_seeds) -> str:
    """``seed3`` for one member; ``seed0-9`` for members seeded 0..9."""
    seed, n = int(seed), int(n_seeds)
    return f"seed{seed}" if n <= 1 else f"seed{seed}-{seed + n - 1}"


def register_resolvers() -> None:
    for name, fn in (("rlzoo_env", env_name), ("rlzoo_seeds", seed_range)):
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, fn)


register_resolvers()


class SweepReport(Callback):
    """A sweep prints its directory at the start and a summary of its runs at the end (stdout)."""

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        print(f"rlzoo: sweep -> {config.hydra.sweep.dir}", flush=True)

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        from rlzoo.progress import sweep_summary
        print(sweep_summary(Path(str(config.hydra.sweep.dir))), flush=True)
        sys.stdout.flush()
