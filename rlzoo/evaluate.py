"""``python -m rlzoo.evaluate <run dir> [episodes=10 epsilon=0 member=all model=final seed=0 device=cpu]``

Plays episodes with a trained run's saved model (``<run dir>/models/<model>.safetensors``) in the run's own
environment, built from the run's composed config (``<run dir>/.hydra/config.yaml``), prints each member's
mean return with its spread, and appends one row per episode to ``<run dir>/returns.csv`` with
``phase=evaluate`` and a ``protocol`` saying how it was played (``model=final episodes=100 epsilon=0
seed=0``). The analysis scripts keep ``phase`` train and eval only, so these rows never mix into learning
curves. ``append=false`` prints without writing.

``seed`` selects the evaluation's random streams (environment resets and exploration draws, per member);
they differ from those of every evaluation during training, which use the step number.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
from omegaconf import DictConfig, OmegaConf

from rlzoo.errors import ConfigError
from rlzoo.io import models
from rlzoo.io.tables import CsvWriter, RETURNS_COLUMNS, read_header

POSTHOC = 1 << 32  # evaluation streams of seed=k use "step" POSTHOC + k: never a training step


def parse_args(argv: list[str], defaults: dict, usage: str) -> tuple[Path, dict]:
    """``<run dir> key=value ...`` -> (run dir, settings); each value takes the type of its default."""
    if not argv or argv[0] in ("-h", "--help"):
        print(usage)
        sys.exit(0 if argv else 2)
    run_dir, out = Path(argv[0]), dict(defaults)
    for arg in argv[1:]:
        key, sep, value = arg.partition("=")
        if not sep or key not in defaults:
            raise ConfigError(f"unknown argument {arg!r}: accepted are {', '.join(f'{k}=' for k in defaults)}")
        kind = type(defaults[key]) if defaults[key] is not None else str
        try:
            if kind is bool:
                if value.lower() not in ("true", "false"):
                    raise ValueError
                out[key] = value.lower() == "true"
            else:
                out[key] = kind(value)
        except ValueError:
            raise ConfigError(f"{key} must be {'true or false' if kind is bool else 'a ' + kind.__name__}, "
                              f"got {value!r}") from None
    return run_dir, out


def run_config(run_dir: Path) -> DictConfig:
    """The composed config a run was trained with."""
    path = run_dir / ".hydra" / "config.yaml"
    if not run_dir.is_dir():
        raise ConfigError(f"{run_dir} is not a directory: give a run directory (results/runs/<...>)")
    if not path.exists():
        raise ConfigError(f"{run_dir} has no .hydra/config.yaml: give the directory of one run (for a sweep, "
                          "one of its job directories)")
    return OmegaConf.load(path)


def parse_members(member: str, population: int) -> list[int]:
    """``all`` -> every member; ``3`` -> [3]; ``0,2`` -> [0, 2] (indices, not seeds)."""
    if member == "all":
        return list(range(population))
    try:
        chosen = [int(m) for m in member.split(",")]
    except ValueError:
        chosen = []
    if not chosen or any(not 0 <= m < population for m in chosen):
        raise ConfigError(f"member must be 'all' or member indices in 0..{population - 1} (comma-separated), "
                          f"got {member!r}")
    return chosen


def load_player(run_dir: Path, model: str = "final", member: str = "all", device: str = "cpu",
                env_overrides: dict | None = None):
    """The environments and the agent of a trained run's chosen members, with the saved model loaded.

    Returns ``(agent, envs, spec, members, seeds, meta)``: ``members`` the indices in the population,
    ``seeds`` their seeds, ``meta`` the model file's metadata. ``env_overrides`` are merged into the env config
    (e.g. ``{"kwargs": {"render_mode": "rgb_array"}}``)."""
    from rlzoo import train  # the run's parts are built the way training built them

    cfg = run_config(run_dir)
    tensors, meta = models.load(models.model_path(run_dir, model))
    population = len(meta.get("seeds", [])) or int(cfg.n_seeds)
    members = parse_members(str(member), population)
    seeds = [int(meta["seeds"][m]) for m in members] if meta.get("seeds") else [int(cfg.seed) + m for m in members]
    train_device = train.resolve_device(device)
    cfg.device = str(train_device)
    env_cfg = OmegaConf.to_container(cfg.env, resolve=True)
    env_cfg.pop("clip_rewards", None)
    for key, value in (env_overrides or {}).items():
        if isinstance(value, dict) and isinstance(env_cfg.get(key), dict):
            env_cfg[key] = {**env_cfg[key], **value}
        else:
            env_cfg[key] = value
    envs, spec = train.make(env_cfg, num_envs=len(members))
    agent = train.build_agent(cfg, spec, seeds, train_device)
    train.set_threads(int(cfg.get("threads", 1)), numpy_learner=getattr(agent, "fast", None) is not None)
    models.load_into(agent, models.select_members(tensors, members))
    return agent, envs, spec, members, seeds, meta


def protocol(model: str, episodes: int, epsilon: float, seed: int) -> str:
    return f"model={model} episodes={episodes} epsilon={epsilon:g} seed={seed}"


def append_rows(run_dir: Path, rows: list[dict]) -> Path:
    """Append ``rows`` to ``returns.csv``; a file from before the ``protocol`` column gets it in its header
    (its older rows simply leave it empty)."""
    path = run_dir / "returns.csv"
    if path.exists() and path.stat().st_size > 0 and "protocol" not in read_header(path):
        text = path.read_text(encoding="utf-8")
        first, _, rest = text.partition("\n")
        path.write_text(first.rstrip("\r") + ",protocol\n" + rest, encoding="utf-8")
    writer = CsvWriter(path, RETURNS_COLUMNS)
    try:
        for row in rows:
            writer.write(row, flush=False)
    finally:
        writer.flush()
        writer.close()
    return path


def spread(values) -> str:
    v = np.asarray(values, dtype=float)
    sd = float(v.std(ddof=1)) if len(v) > 1 else 0.0
    return f"{v.mean():8.1f} +- {sd:6.1f} (min {v.min():.1f}, max {v.max():.1f})"


def evaluate_run(run_dir, episodes: int = 10, epsilon: float = 0.0, member: str = "all", model: str = "final",
                 seed: int = 0, device: str = "cpu", append: bool = True, stream=None) -> dict:
    """Play ``episodes`` episodes per chosen member; print and (``append``) log them. Returns
    ``{seed: [(return, length), ...]}``."""
    from rlzoo.loop import evaluate
    from rlzoo.seeding import evaluation_seeds

    stream = stream or sys.stdout
    run_dir = Path(run_dir)
    if episodes < 1:
        raise ConfigError(f"episodes must be >= 1, got {episodes}")
    if not 0.0 <= epsilon <= 1.0 or math.isnan(epsilon):
        raise ConfigError(f"epsilon must be in [0, 1], got {epsilon}")
    if seed < 0:
        raise ConfigError(f"seed must be >= 0, got {seed}")
    agent, envs, spec, members, seeds, meta = load_player(run_dir, model, member, device)
    try:
        env_seeds, rngs = evaluation_seeds(seeds, POSTHOC + seed)
        results = evaluate(agent, envs, episodes, epsilon, rngs, spec.num_actions, seeds=env_seeds)
    finally:
        envs.close()
    steps = meta.get("steps") or [None] * (max(members) + 1)
    proto = protocol(model, episodes, epsilon, seed)
    print(f"rlzoo.evaluate: {run_dir} ({meta.get('agent', '?')} on {spec.name}), {proto}", file=stream)
    print(f"  {'seed':>5} {'step':>10}  return: mean +- sd over {episodes} episodes", file=stream)
    rows = []
    for m, s, res in zip(members, seeds, results):
        returns = [r for r, _ in res]
        print(f"  {s:>5} {steps[m] if steps[m] is not None else '?':>10}  {spread(returns)}", file=stream)
        agent_name, env_name = meta.get("agent", "agent"), spec.name
        for k, (ret, length) in enumerate(res, 1):
            rows.append({"agent": agent_name, "env": env_name, "seed": s, "phase": "evaluate", "step": steps[m],
                         "episode": k, "return": ret, "length": length, "protocol": proto})
    if len(members) > 1:
        member_means = [float(np.mean([r for r, _ in res])) for res in results]
        print(f"  over {len(members)} members (mean of member means): {spread(member_means)}", file=stream)
    if append:
        path = append_rows(run_dir, rows)
        print(f"  appended {len(rows)} rows (phase=evaluate) to {path}", file=stream)
    return {s: res for s, res in zip(seeds, results)}


USAGE = __doc__.split("\n\n")[0] + "\n\n" + "\n\n".join(__doc__.split("\n\n")[1:])
DEFAULTS = {"episodes": 10, "epsilon": 0.0, "member": "all", "model": "final", "seed": 0, "device": "cpu",
            "append": True}


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    try:
        run_dir, args = parse_args(argv, DEFAULTS, USAGE)
        evaluate_run(run_dir, **args)
    except ConfigError as e:
        print(f"rlzoo.evaluate: error: {e}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
