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


def _has_rows(path: Path) -> bool:
    """True when a CSV holds anything after its header line (a row, or part of one)."""
    with open(path, "rb") as f:
        header = f.readline()
    return path.stat().st_size > len(header)


def discard_unstarted(run_dir, launch_files=()) -> bool:
    """Remove what a launch that stopped before training (a rejected config, Ctrl-C during start-up, a full
    disk while writing the CSV headers) left in ``run_dir``, so that the same command can be run again: CSVs
    that hold only their header, an empty TensorBoard directory tree, the lock file, ``launch_files`` (this
    launch's Hydra files), then the directory itself if nothing else is left in it. A directory with a
    checkpoint or any CSV row holds a run and is left as it is. Call it while holding the directory's lock.
    Returns True when the directory is gone."""
    import shutil

    from rlzoo.io.lock import LOCK_NAME
    from rlzoo.io.tables import TABLES

    d = Path(run_dir)
    if not d.is_dir():
        return True
    csvs = [d / name for name, _ in TABLES.values()]
    try:
        if (d / "checkpoint.pt").exists() or any(p.is_file() and _has_rows(p) for p in csvs):
            return False
    except OSError:  # unreadable: leave it
        return False
    for p in csvs:
        p.unlink(missing_ok=True)
    tb = d / "tensorboard"
    if tb.is_dir() and not any(f.is_file() and f.stat().st_size > 200 for f in tb.rglob("*")):  # no scalar in it
        shutil.rmtree(tb, ignore_errors=True)
    for f in launch_files:
        f = Path(f)
        if d in f.parents:
            shutil.rmtree(f, ignore_errors=True) if f.is_dir() else f.unlink(missing_ok=True)
    hydra_dir = d / ".hydra"
    if hydra_dir.is_dir() and not any(hydra_dir.iterdir()):
        hydra_dir.rmdir()
    (d / LOCK_NAME).unlink(missing_ok=True)
    try:
        d.rmdir()
    except OSError:  # other files: not only this launch's
        return False
    return True


LAST_SWEEP_DIR: list[str] = []  # the directory of the sweep this process started (SweepReport), for error messages


class SweepReport(Callback):
    """A sweep prints its directory at the start and a summary of its runs at the end (stdout)."""

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        LAST_SWEEP_DIR[:] = [str(config.hydra.sweep.dir)]
        print(f"rlzoo: sweep -> {config.hydra.sweep.dir}", flush=True)

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        from rlzoo.progress import sweep_summary
        print(sweep_summary(Path(str(config.hydra.sweep.dir))), flush=True)
        sys.stdout.flush()
