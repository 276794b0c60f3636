"""Entry point: the only module that reads the config tree. Builds the parts and calls ``loop.run``."""

from __future__ import annotations

import errno
import functools
import logging
import math
import os
import re
import shlex
import signal
import sys
import time
from pathlib import Path

import hydra
import numpy as np
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.errors import CompactHydraException, InstantiationException
from hydra.types import RunMode
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException, ValidationError
from threadpoolctl import threadpool_limits

from rlzoo import loop, policy_evaluation, sweeps
from rlzoo import config as rlzoo_config  # registers the schema of conf/config.yaml
from rlzoo.io import checkpoint, models
from rlzoo.io.lock import RunDirLocked, RunLock
from rlzoo.io import rundir  # noqa: F401  (registers the run-directory name resolvers of conf/config.yaml)
from rlzoo.agents.tabular import Discretizer
from rlzoo.envs import num_states_for_table
from rlzoo.errors import ConfigError
from rlzoo.nets import ObservationEncoder, QNetwork, member_generators
from rlzoo.progress import Progress, run_summary
from rlzoo.io.tables import RunLogger
from rlzoo.schedules import LinearSchedule
from rlzoo.seeding import member_seeds

log = logging.getLogger("rlzoo")
CONF_DIR = str(Path(__file__).resolve().parent.parent / "conf")


def _num(cfg: DictConfig, key: str, *, integer: bool = False, low=None, high=None, low_open: bool = False):
    """Read a numeric key and check it is finite and in range, with an error that names the key. A group's keys
    have no schema (their components check their own arguments), so their type is checked here too."""
    value = OmegaConf.select(cfg, key)
    kind = "a whole number" if integer else "a number"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{key} must be {kind}, got {value!r}")
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{key} must be a finite number, got {value}")
    if integer and isinstance(value, float) and not value.is_integer():
        raise ConfigError(f"{key} must be {kind}, got {value!r}")
    value = int(value) if integer else float(value)
    if low is not None and (value <= low if low_open else value < low):
        raise ConfigError(f"{key} must be {'>' if low_open else '>='} {low}, got {value}")
    if high is not None and value > high:
        raise ConfigError(f"{key} must be <= {_bound(high)}, got {value}")
    return value


def _bound(high) -> str:
    """A bound as the user reads it: the 64-bit limits by name."""
    named = {2**63 - 1: "2**63 - 1 = 9223372036854775807 (the largest 64-bit integer numpy and torch take)",
             2**64 - 1: "2**64 - 1 = 18446744073709551615 (64 bits)",
             2**31 - 1: "2**31 - 1 = 2147483647 (a C int)"}
    return named.get(high, str(high)) if isinstance(high, int) else str(high)


GROUPS = ("agent", "env", "network", "replay", "target_sync", "optimizer", "policy_evaluation")


def check_group_values(cfg: DictConfig) -> None:
    """Every number anywhere in a group's config (``target_sync.tau``, ``replay.sampler.alpha``,
    ``agent.head.v_min``, ``env.kwargs.*``, ``optimizer.eps``, list entries such as ``agent.discretizer.low``):
    a float must be finite and an integer must fit in 64 bits, which is all numpy and torch take. Checked for
    every key alike, before anything is made; each component checks its own ranges when it is made."""
    def walk(node, path):
        if isinstance(node, dict):
            for k, v in node.items():
                walk(v, f"{path}.{k}")
        elif isinstance(node, (list, tuple)):
            for i, v in enumerate(node):
                walk(v, f"{path}[{i}]")
        elif isinstance(node, float) and not math.isfinite(node):
            raise ConfigError(f"{path} must be a finite number, got {node}")
        elif isinstance(node, int) and not isinstance(node, bool) and not -2**63 <= node <= 2**63 - 1:
            raise ConfigError(f"{path} must be an integer between -2**63 and 2**63 - 1 (what numpy and torch take), "
                              f"got {node}")
    for group in GROUPS:
        if OmegaConf.select(cfg, group) is not None:
            walk(OmegaConf.to_container(cfg[group], resolve=True), group)


def validate(cfg: DictConfig) -> None:
    """Fail before training, with one sentence, on values that cannot work. Hydra has checked each top-level
    value's type against ``rlzoo.config.RunConfig`` while composing; these are the checks a type cannot express
    (ranges, finite floats, the choices of a text key) and the ones that span keys."""
    try:  # reads every value: an interpolation (e.g. ${oc.env:SEED}) is resolved and its result's type checked
        missing = sorted(OmegaConf.missing_keys(cfg))
    except ValidationError as e:
        raise ConfigError(rlzoo_config.type_error(e) or str(e).splitlines()[0]) from None
    if missing:
        example = " (e.g. env=gym env.id=Acrobot-v1)" if "env.id" in missing else ""
        raise ConfigError(f"{', '.join(missing)} must be given a value on the command line{example}")
    for key, bounds in rlzoo_config.numeric_ranges().items():
        if cfg[key] is not None:
            _num(cfg, key, **bounds)
    check_group_values(cfg)
    if cfg.seed + cfg.n_seeds - 1 > 2**64 - 1:  # torch.manual_seed takes at most 64 bits
        raise ConfigError(f"seed + n_seeds - 1 must be at most 2**64 - 1 = {2**64 - 1}, got seed={cfg.seed} with "
                          f"n_seeds={cfg.n_seeds}")
    if cfg.learning_starts > cfg.total_steps:
        raise ConfigError(f"learning_starts={cfg.learning_starts} is larger than total_steps={cfg.total_steps}: the "
                          "agent would never learn. Lower learning_starts or raise total_steps")
    first_update = -(-max(cfg.learning_starts, 1) // cfg.train_freq) * cfg.train_freq
    if first_update < cfg.n_step:
        raise ConfigError(f"n_step={cfg.n_step} writes its first transition at step {cfg.n_step}, after the first "
                          f"learner update at step {first_update}: raise learning_starts to at least {cfg.n_step}")
    if cfg.lr_end is not None:
        _num(cfg, "lr_end", high=cfg.lr)
    if cfg.loss not in ("huber", "mse"):
        raise ConfigError(f"loss must be 'huber' or 'mse', got {cfg.loss!r}")
    resolve_device(cfg.device)
    if OmegaConf.select(cfg, "env.max_episode_steps") is not None:
        _num(cfg, "env.max_episode_steps", integer=True, low=1)
    batch = _num(cfg, "replay.batch_size", integer=True, low=1)
    capacity = _num(cfg, "replay.capacity", integer=True, low=1)
    if batch > capacity:
        raise ConfigError(f"replay.batch_size={batch} is larger than replay.capacity={capacity}: "
                          "raise replay.capacity or lower batch_size")


def make(config, **kwargs):
    """``hydra.utils.instantiate``, with a component's own complaint about a bad value (a ValueError,
    e.g. ``HardSync(every=0)``) surfaced as a ConfigError instead of Hydra's wrapped traceback."""
    try:
        return instantiate(config, **kwargs)
    except InstantiationException as e:
        cause = e.__cause__
        if isinstance(cause, ValueError):  # ConfigError included
            raise ConfigError(str(cause)) from None
        raise


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        raise ConfigError(f"device must be 'auto', 'cpu' or 'cuda[:N]', got {name!r}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device=cuda was asked for but PyTorch sees no CUDA GPU: use device=auto or device=cpu")
    if device.type not in ("cpu", "cuda"):
        raise ConfigError(f"device must be 'auto', 'cpu' or 'cuda[:N]', got {name!r}")
    return device


def build_agent(cfg: DictConfig, spec, seeds, device, **extra):
    """The agent for this environment: a Q-table (no ``head`` in its config) or a deep Q-network (``extra``:
    more constructor arguments, e.g. the fixed policy of a policy-evaluation agent)."""
    agent_cfg = OmegaConf.to_container(cfg.agent, resolve=True)
    head_cfg = agent_cfg.pop("head", None)
    if head_cfg is None:  # tabular
        disc_cfg = agent_cfg.pop("discretizer", None) or {}
        discretizer = None
        num_states = num_states_for_table(spec, disc_cfg.get("bins", 1))
        if spec.num_states is None:
            low = disc_cfg.get("low") or spec.obs_low
            high = disc_cfg.get("high") or spec.obs_high
            for key, bound in (("low", disc_cfg.get("low")), ("high", disc_cfg.get("high"))):
                if bound is not None and (not isinstance(bound, (list, tuple)) or len(bound) != len(spec.obs_low)):
                    raise ConfigError(f"agent.discretizer.{key} must be a list of {len(spec.obs_low)} numbers, one per "
                                      f"dimension of {spec.name}'s observations, got {bound}")
            try:
                discretizer = Discretizer(disc_cfg.get("bins", 1), low, high)
            except ValueError as e:
                raise ConfigError(f"{e}; {spec.name}'s observation space gives low={list(spec.obs_low)} "
                                  f"high={list(spec.obs_high)}") from None
        return make(agent_cfg, num_states=num_states, num_actions=spec.num_actions, seeds=seeds,
                           discretizer=discretizer)
    gens = member_generators(seeds)
    encoder = ObservationEncoder(spec.obs_shape, num_states=spec.num_states,
                                 scale=spec.obs_scale if spec.obs_scale is not None else
                                 (255.0 if spec.obs_dtype == np.uint8 else None), flatten=not spec.pixels)
    torso = make(cfg.network, in_shape=encoder.out_shape, generators=gens)  # a bad shape: ConfigError
    head = make(head_cfg, in_features=torso.out_features, num_actions=spec.num_actions, generators=gens)
    q_net = QNetwork(encoder, torso, head).to(device)
    optimizer = make(cfg.optimizer, params=q_net.parameters())
    target_fn = plain_partial(make(agent_cfg.pop("target_fn")))
    agent = make(agent_cfg, _partial_=True)  # objects as arguments: Hydra would turn a dataclass into a config
    try:
        return agent(q_net=q_net, optimizer=optimizer, target_fn=target_fn, target_sync=make(cfg.target_sync),
                     fast_path=bool(cfg.fast_path), lr_scheduler=lr_scheduler(cfg), seeds=seeds, **extra)
    except ValueError as e:
        raise ConfigError(str(e)) from None


def num_updates(total_steps: int, learning_starts: int, train_freq: int) -> int:
    """Learner steps in a run: one at every step ``1 <= t <= total_steps`` with ``t >= learning_starts`` and
    ``t % train_freq == 0``."""
    return total_steps // train_freq - max(learning_starts - 1, 0) // train_freq


def lr_scheduler(cfg: DictConfig):
    """``lr_end`` set: the learning rate decays linearly from ``lr`` to ``lr_end`` over the run's learner
    updates (``torch.optim.lr_scheduler.LinearLR``); None: it stays constant."""
    if cfg.get("lr_end") is None:
        return None
    factor = float(cfg.lr_end) / float(cfg.lr)
    updates = num_updates(cfg.total_steps, cfg.learning_starts, cfg.train_freq) * cfg.gradient_steps
    return functools.partial(torch.optim.lr_scheduler.LinearLR, start_factor=1.0, end_factor=factor,
                             total_iters=max(updates, 1))


def plain_partial(fn):
    """Hydra 1.3.8 wraps ``_partial_`` results in a policy-checking partial that re-validates its
    target on every call (tens of microseconds, paid at every learner update). Targets in rlzoo's
    own configs are checked once at instantiation; call them as a plain ``functools.partial``."""
    if isinstance(fn, functools.partial):
        return functools.partial(fn.func, *fn.args, **fn.keywords)
    return fn


def set_threads(threads: int, numpy_learner: bool) -> None:
    """``threads`` (0: all cores) for the library that does the learner's arithmetic, numpy's BLAS for
    the numpy learner or torch otherwise, and one thread for the other. Torch's OpenMP threads and
    OpenBLAS's threads both spin-wait between calls: with two threads each on a 2-core machine,
    training ran 10x slower (measured on CartPole). ``threads=0`` counts the cores this process may use
    (``available_cores``), not the machine's, so parallel jobs of a launcher do not oversubscribe."""
    threads = threads if threads > 0 else available_cores()
    torch.set_num_threads(1 if numpy_learner else threads)
    threadpool_limits(threads if numpy_learner else 1, user_api="blas")
    log.info("threads: torch %d, BLAS %d (threads=%d)", torch.get_num_threads(), threads if numpy_learner else 1,
             threads)


def available_cores() -> int:
    """Cores this process may run on: SLURM's ``SLURM_CPUS_PER_TASK`` inside a SLURM job, else the CPU affinity
    mask (what ``taskset``, cgroups and batch schedulers leave it), else ``os.cpu_count()``."""
    slurm = os.environ.get("SLURM_CPUS_PER_TASK", "")
    if slurm.isdigit() and int(slurm) > 0:
        return int(slurm)
    if hasattr(os, "sched_getaffinity"):
        return max(len(os.sched_getaffinity(0)), 1)
    return os.cpu_count() or 1


def available_memory(device: torch.device) -> int:
    """Bytes that can still be allocated on ``device``: CUDA's free memory; on the CPU the kernel's estimate
    (``MemAvailable`` in /proc/meminfo, else ``os.sysconf``'s available pages), lowered to what is left of a
    cgroup's memory limit when the process runs under one. Tests replace this function."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    free = None
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    free = int(line.split()[1]) * 1024
    except OSError:
        pass
    if free is None:
        try:
            free = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            return 2**63 - 1  # unknown: refuse nothing
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        if limit != "max":
            free = min(free, int(limit) - int(Path("/sys/fs/cgroup/memory.current").read_text()))
    except (OSError, ValueError):
        pass
    return free


def _gb(n: int) -> str:
    return f"{n / 1e9:,.1f} GB" if n >= 1e9 else f"{n / 1e6:,.1f} MB"


def check_memory(cfg: DictConfig, spec, device: torch.device) -> None:
    """Refuse, before anything large is allocated, a replay memory or Q-table that does not fit in the memory
    left on ``device``: replay capacity x members x bytes per transition (each storage's ``bytes_needed``),
    plus a prioritized sampler's sum trees; Q-table members x states x actions x 8 bytes (x 2 for Double
    Q-learning's two tables)."""
    from hydra.utils import get_class

    P = int(cfg.n_seeds)
    parts = []
    replay_cfg = cfg.replay
    storage_cfg = replay_cfg.get("storage") or {}
    target = storage_cfg.get("_target_") or (
        "rlzoo.replay.FrameStorage" if "Frame" in str(replay_cfg.get("_target_", "")) else "rlzoo.replay.TransitionStorage")
    try:
        storage = get_class(target)
    except Exception:  # noqa: BLE001 -- an unknown storage: its own constructor reports it
        storage = None
    capacity = int(replay_cfg.capacity)
    if hasattr(storage, "bytes_needed"):
        extra = {k: storage_cfg.get(k) for k in ("n_step", "frame_capacity") if storage_cfg.get(k) is not None}
        need = storage.bytes_needed(capacity=capacity, obs_shape=spec.obs_shape, obs_dtype=spec.obs_dtype,
                                    population=P, **extra)
        if "Prioritized" in str(OmegaConf.select(replay_cfg, "sampler._target_", default="")):
            need += 16 * (1 << max(0, (capacity - 1).bit_length())) * P  # float64 sum tree: 2 x leaves per member
        parts.append((need, f"the replay memory (buffer_size={capacity:,} x n_seeds={P:,} x "
                            f"{need // max(P * capacity, 1):,} bytes per transition of {spec.name})"))
    if cfg.agent.get("head") is None:  # a Q-table (as build_agent tells)
        bins = OmegaConf.select(cfg, "agent.discretizer.bins", default=1)
        bins = OmegaConf.to_container(bins) if OmegaConf.is_config(bins) else bins
        states = num_states_for_table(spec, bins)
        tables = 2 if "Double" in str(cfg.agent.get("_target_", "")) else 1
        parts.append((P * states * spec.num_actions * 8 * tables,
                      f"the Q-table{'s' if tables > 1 else ''} (n_seeds={P:,} x {states:,} states x "
                      f"{spec.num_actions} actions x 8 bytes{' x 2 tables' if tables > 1 else ''})"))
    need = sum(n for n, _ in parts)
    free = available_memory(device)
    if need > free:
        raise ConfigError(f"this run needs about {_gb(need)} on {device.type} for "
                          f"{' and '.join(what for _, what in parts)} but only {_gb(free)} is available: lower "
                          "buffer_size or n_seeds (or agent.discretizer.bins)")


def build(cfg: DictConfig, out_dir: str | os.PathLike, agent_name: str) -> loop.Run:
    """Validate, then make every part of a run."""
    validate(cfg)
    device = resolve_device(cfg.device)
    env_cfg = OmegaConf.to_container(cfg.env, resolve=True)
    clip_rewards = bool(env_cfg.pop("clip_rewards", False))  # a loop setting, not a factory argument
    use_action_mask = bool(env_cfg.pop("action_mask", False))  # a loop setting: act among info["action_mask"]
    if cfg.n_seeds > 1:  # sizes from one member's environment, before P of them (and their memory) are made
        probe, spec = make(env_cfg, num_envs=1)
        probe.close()
        check_memory(cfg, spec, device)
    seeds = member_seeds(cfg.seed, cfg.n_seeds)
    torch.manual_seed(cfg.seed)
    envs, spec = make(env_cfg, num_envs=cfg.n_seeds)
    if cfg.n_seeds == 1:
        check_memory(cfg, spec, device)
    eval_envs, _ = make(env_cfg, num_envs=cfg.n_seeds)
    evaluation = None  # policy evaluation: a fixed policy acts and is the agent's target (rlzoo.policy_evaluation)
    if cfg.get("policy_evaluation") is not None:
        evaluate_policy = make(cfg.policy_evaluation, _partial_=True)  # objects as arguments (see build_agent)
        try:
            evaluation = evaluate_policy(model=policy_evaluation.env_model(envs, spec.name), gamma=cfg.gamma)
        except ValueError as e:
            raise ConfigError(str(e)) from None
    agent = build_agent(cfg, spec, seeds, device, **({"policy": evaluation.policy} if evaluation else {}))
    set_threads(int(cfg.threads), numpy_learner=getattr(agent, "fast", None) is not None)
    replay = make(cfg.replay, obs_shape=spec.obs_shape, obs_dtype=spec.obs_dtype, seeds=seeds, device=device,
                  total_updates=num_updates(cfg.total_steps, cfg.learning_starts, cfg.train_freq) * cfg.gradient_steps)
    decay_steps = cfg.get("eps_decay_steps")
    if decay_steps is None:
        decay_steps = int(cfg.eps_decay_fraction * cfg.total_steps)
    settings = loop.Settings(
        total_steps=cfg.total_steps, learning_starts=cfg.learning_starts, train_freq=cfg.train_freq,
        gradient_steps=cfg.gradient_steps, epsilon=LinearSchedule(cfg.eps_start, cfg.eps_end, int(decay_steps)),
        gamma=cfg.gamma, eval_every=cfg.eval_every, eval_episodes=cfg.eval_episodes, eval_epsilon=cfg.eval_epsilon,
        log_every=cfg.log_every, clip_rewards=clip_rewards, log_q_estimates=bool(cfg.log_q_estimates),
        nan_check=bool(cfg.nan_check), action_mask=use_action_mask)
    logger = RunLogger(out_dir, agent=agent_name, env=spec.name, seeds=seeds, tensorboard=bool(cfg.tensorboard))
    return loop.Run(envs=envs, eval_envs=eval_envs, spec=spec, agent=agent, replay=replay, logger=logger,
                    seeds=seeds, settings=settings, device=device,
                    behaviour=evaluation.policy if evaluation else None,
                    probes=[evaluation.probe(out_dir, agent_name, spec.name, seeds)] if evaluation else [])


def train(cfg: DictConfig, out_dir: str | os.PathLike, *args, **kwargs):
    """``_train`` (below) while holding the run directory's lock: a second process started on the same directory
    stops with one line naming the holder, before it writes anything (``rlzoo.io.lock``).

    A launch that stops before training begins (a value refused while the parts are made, Ctrl-C during
    start-up, a full disk) removes what it made (``rundir.discard_unstarted``): no half-made directory is left
    to block the same command run again. The exception then carries ``rlzoo_started = False``."""
    validate(cfg)  # a rejected config leaves no lock file behind
    started: list[bool] = []
    with RunLock(out_dir):
        try:
            return _train(cfg, out_dir, *args, started=started, **kwargs)
        except (Exception, KeyboardInterrupt) as e:
            e.rlzoo_started = bool(started)
            if not started:
                rundir.discard_unstarted(out_dir)
            raise


class DiskFull(ConfigError):
    """A write failed because the disk (or the user's quota) is full."""


def disk_full_message(error: OSError, out_dir, ckpt, overrides, started: bool) -> str:
    """One line: the file, the last good checkpoint and the command that continues."""
    name = error.filename or f"a file in {out_dir}"
    what = f"the disk is full ({error.strerror or os.strerror(error.errno)}) while writing {name}"
    if not started:
        return f"{what}, before training began (nothing was kept): free some space and run the command again"
    if ckpt is not None and ckpt.saved_step is not None and ckpt.path.exists():
        return (f"{what}: the last good checkpoint is {ckpt.path} (step {ckpt.saved_step}); free some space, "
                f"then continue with: {resume_hint(overrides, out_dir)}")
    return (f"{what}: no checkpoint was written yet (checkpoint_every={ckpt.every if ckpt else '?'}), so the run "
            f"cannot be continued: free some space and start it again in a new directory")


def _train(cfg: DictConfig, out_dir: str | os.PathLike, agent_name: str = "agent", progress: bool | None = None,
           overrides: list[str] = (), tag: str = "", plain: bool | None = None, started: list | None = None):
    """``_training`` with a full disk turned into ``DiskFull``'s one line."""
    started = [] if started is None else started
    parts: dict = {}
    try:
        return _training(cfg, out_dir, agent_name, progress, overrides, tag, plain, started, parts)
    except OSError as e:
        if e.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        raise DiskFull(disk_full_message(e, out_dir, parts.get("ckpt"), overrides, bool(started))) from None


def _training(cfg: DictConfig, out_dir, agent_name, progress, overrides, tag, plain, started: list, parts: dict):
    """Build and run one (population) training run, writing CSVs, models (and checkpoints) into ``out_dir``.
    ``tag`` starts every progress line; ``plain``: plain progress lines even on a terminal (parallel jobs).

    With ``resume=true`` the run continues from ``out_dir/checkpoint.pt``; without it, a directory that already
    holds results is refused. ``overrides`` (the command line) are recorded in checkpoints for the resume hint.
    ``train`` has validated ``cfg``.
    """
    show = cfg.get("progress", True) if progress is None else progress
    config = OmegaConf.to_container(cfg, resolve=True)
    resume_from = checkpoint.prepare(out_dir, cfg.resume, config, agent_name)  # before anything is written to out_dir
    run = build(cfg, out_dir, agent_name)
    ckpt = parts["ckpt"] = checkpoint.Checkpointer(out_dir, cfg.checkpoint_every, run, config, overrides,
                                                        agent=agent_name)
    saver = models.ModelSaver(out_dir, run.agent, run.seeds, identity={"agent": agent_name, "env": run.spec.name},
                              resume=resume_from is not None)
    bar = Progress(cfg.total_steps, enabled=show, tag=tag, plain=plain)
    log.info("training %s on %s: %d member(s), seeds %s, %d steps each, device %s -> %s", agent_name,
             run.spec.name, len(run.seeds), run.seeds, cfg.total_steps, run.device, out_dir)
    try:
        if resume_from is not None:
            checkpoint.restore(run, resume_from, out_dir)
            log.info("resumed %s at step %d of %d (environments %s)", out_dir, run.state.step, cfg.total_steps,
                     "restored exactly" if run.envs.exact_state else "restarted: their state cannot be saved")
            ckpt.saved_step = run.state.step  # a finished run resumed again has nothing to do or rewrite
            bar.restart(run.state.step)
        ckpt.schedule_after(run.state.step if run.state else 0)
        with ckpt.signals():
            started.append(True)  # from here on, Ctrl-C and SIGTERM checkpoint and stop
            if _SWEEP_STOP:  # a sweep's worker got the signal while this job started: stop after one step
                ckpt.request_stop(_SWEEP_STOP[0])
            try:
                state = loop.run(run, bar, ckpt, on_evaluation=(bar.evaluated, saver.evaluated))
            finally:
                bar.close()
        if ckpt.stop_requested:
            raise checkpoint.RunStopped(
                f"stopped by {signal.Signals(ckpt.signum).name} at step {state.step} of {cfg.total_steps}: checkpoint "
                f"written to {ckpt.path} ({ckpt.bytes / 1e6:.1f} MB in {ckpt.seconds:.2f} s), CSVs flushed; continue "
                f"with: {resume_hint(overrides, out_dir)}", ckpt.signum)
        ckpt.finish(state)  # the final state (networks, optimizer, replay), whatever checkpoint_every is on resume
        saver.final(state.step)
        run.models = list(saver.written)  # the model files, for the end-of-run summary
    finally:
        run.close()
    return run


def hydra_value(value) -> str:
    """``value`` as Hydra's override grammar reads it back: quoted unless it is made of plain characters only
    (a sweep job's directory holds ``=`` and ``,``, which Hydra would read as a key or a list of values)."""
    value = str(value)
    if re.fullmatch(r"[\w./:+-]+", value):
        return value
    if "'" not in value and not value.endswith("\\"):
        return f"'{value}'"
    return '"' + value.replace('"', '\\"') + '"'


def resume_hint(overrides, out_dir) -> str:
    """The command that continues a stopped run, each argument quoted for a POSIX shell (``shlex.quote``) and
    the directory for Hydra as well, so that it works when pasted."""
    kept = [shlex.quote(o) for o in overrides if not o.startswith(("hydra.run.dir=", "resume="))]
    return " ".join(["python -m rlzoo", *kept, shlex.quote(f"hydra.run.dir={hydra_value(out_dir)}"), "resume=true"])


def sweep_hint(argv, sweep_dir) -> str:
    """The command that runs a sweep again into ``sweep_dir``: complete jobs are skipped, checkpointed ones
    resumed (``rlzoo.sweeps``)."""
    kept = [shlex.quote(a) for a in argv if not a.startswith("hydra.sweep.dir=")]
    return " ".join(["python -m rlzoo", *kept, shlex.quote(f"hydra.sweep.dir={hydra_value(sweep_dir)}")])


_FULL_ERROR = os.environ.get("HYDRA_FULL_ERROR") == "1"  # read at import: ``main`` sets the variable for Hydra


def sweep_job(cfg: DictConfig, out_dir: str) -> bool:
    """A job of a sweep whose directory may already hold its run (the same sweep command run again into the same
    ``hydra.sweep.dir``): False when that run is complete, else True with ``resume`` set to continue a checkpoint
    or start afresh (``rlzoo.sweeps``)."""
    validate(cfg)
    state = sweeps.job_state(out_dir, OmegaConf.to_container(cfg, resolve=True))
    if state == sweeps.COMPLETE:
        log.info("skipped: %s already holds this job's complete run (checkpoint at total_steps=%d, CSVs match it)",
                 out_dir, cfg.total_steps)
        return False
    cfg.resume = state == sweeps.RESUME
    return True


def _run(cfg: DictConfig) -> None:
    """One run, as Hydra calls it (once per job in a sweep): a config error or a stop signal ends it with one line."""
    hc = HydraConfig.get()
    multirun = hc.mode == RunMode.MULTIRUN
    parallel = multirun and "joblib" in str(OmegaConf.select(hc, "launcher._target_", default=""))
    if parallel and not _MAIN_PROCESS:  # a joblib worker: a signal between jobs stops the sweep, not the worker
        _catch_stop_signals()
    if multirun and _SWEEP_STOP:
        _discard_launch(hc)  # the directory Hydra made for this job: a rerun of the sweep starts it afresh
        print(f"rlzoo: job {hc.job.num} not started: the sweep was stopped by "
              f"{signal.Signals(_SWEEP_STOP[0]).name}", file=sys.stderr)
        return
    try:
        if multirun and not sweep_job(cfg, hc.runtime.output_dir):
            return
        agent_name = hc.runtime.choices.get("agent", "agent")
        started = time.perf_counter()
        run = train(cfg, out_dir=hc.runtime.output_dir, agent_name=agent_name, overrides=list(hc.overrides.task),
                    tag=f"{hc.job.num} {agent_name}" if multirun else "", plain=True if parallel else None)
        print(run_summary(hc.runtime.output_dir, time.perf_counter() - started,
                          title=f"{agent_name} on {run.spec.name}, {rundir.seed_range(cfg.seed, cfg.n_seeds)}, "
                                f"{cfg.total_steps:,} steps each", models=getattr(run, "models", ())), flush=True)
    except checkpoint.RunStopped as e:
        if parallel and not _MAIN_PROCESS:  # the worker lives on; the sweep's process prints how to continue
            _SWEEP_STOP.append(e.signum)
            print(f"rlzoo: job {hc.job.num} {e}", file=sys.stderr, flush=True)
            return
        print(f"rlzoo: {e}", file=sys.stderr)
        sys.exit(128 + e.signum)
    except RunDirLocked as e:
        if hc.mode == RunMode.MULTIRUN:  # another instance of this sweep runs this job: the others go on
            print(f"rlzoo: job {hc.job.num} skipped: {e}", file=sys.stderr)
            return
        print(f"rlzoo: error: {e}", file=sys.stderr)
        sys.exit(2)
    except ConfigError as e:
        if not getattr(e, "rlzoo_started", False):
            _discard_launch(hc)
        if _FULL_ERROR:
            raise
        print(f"rlzoo: error: {e}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt as e:
        if getattr(e, "rlzoo_started", False):  # after training (its signal handlers are gone): e.g. saving models
            print(f"rlzoo: interrupted (Ctrl-C) after training; continue with: "
                  f"{resume_hint(list(hc.overrides.task), hc.runtime.output_dir)}", file=sys.stderr)
        else:
            _discard_launch(hc)
            print("rlzoo: interrupted (Ctrl-C) during start-up, before training began: nothing was kept; run the "
                  "command again to start", file=sys.stderr)
        sys.exit(130)


_SWEEP_STOP: list[int] = []  # the stop signals this process received during a sweep (SIGINT, SIGTERM)
_MAIN_PROCESS = False  # True in the process that ran ``main`` (not in a joblib worker)


def _catch_stop_signals(forward: bool = False) -> None:
    """SIGINT and SIGTERM between a sweep's jobs: remember them, so that no further job starts (a running job
    has its own handlers: it checkpoints and stops). ``forward`` (the sweep's own process): pass SIGTERM on to
    the worker processes; Ctrl-C at a terminal reaches them already, as the whole process group gets it."""
    def stop(signum, frame):
        children = _child_pids() if forward else []
        if forward and not children:  # no worker yet (or jobs run in this process between jobs): stop now
            if signum == signal.SIGINT:
                raise KeyboardInterrupt
            print(f"rlzoo: stopped by {signal.Signals(signum).name} before a job was running", file=sys.stderr)
            sys.exit(128 + signum)
        _SWEEP_STOP.append(signum)
        if signum == signal.SIGTERM:
            for pid in children:
                try:
                    os.kill(pid, signal.SIGTERM)
                except OSError:
                    pass
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, stop)


def _child_pids() -> list[int]:
    """The processes this one started (joblib's workers and its resource tracker, which ignores signals)."""
    me, out = os.getpid(), []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == me:
                out.append(int(stat.parent.name))
        except (OSError, ValueError, IndexError):
            continue
    return out


def _discard_launch(hc) -> None:
    """A launch that never trained: remove its run directory (a sweep job's own directory) if it holds nothing
    else (``rundir.discard_unstarted`` with this launch's Hydra files: its output subdirectory and log)."""
    out = Path(hc.runtime.output_dir)
    files = [out / f"{hc.job.name}.log"]
    if hc.output_subdir is not None:
        files.append(out / str(hc.output_subdir))
    rundir.discard_unstarted(out, files)


def _first_line(error: BaseException, limit: int = 160) -> str:
    text = str(error).strip()
    return text.splitlines()[0][:limit] if text else type(error).__name__


def group_key_hint(error: BaseException) -> str | None:
    """For ``target_sync.every=5`` while ``target_sync=soft`` is chosen (Hydra: "Could not override ... not in
    struct"): the sentence that names the group options that have the key. None for other errors, and when no
    option has the key."""
    import re

    import yaml

    m = re.search(r"Could not override '([\w]+)\.([\w.]+)'", str(error))
    if m is None or not (Path(CONF_DIR) / m.group(1)).is_dir():
        return None
    group, rest = m.groups()
    having = []
    for option in sorted((Path(CONF_DIR) / group).glob("*.yaml")):
        node = yaml.safe_load(option.read_text()) or {}
        for part in rest.split("."):
            node = node.get(part, KeyError) if isinstance(node, dict) else KeyError
        if node is not KeyError:
            having.append(option.stem)
    if not having:
        return None  # Hydra's own message (a typo, or + to add a key) says it
    return (f"{group}.{rest}: the chosen {group} option has no key {rest!r}; it belongs to "
            f"{' and '.join(f'{group}={o}' for o in having)}: choose one, e.g. {group}={having[0]} {group}.{rest}=...")


_hydra_main = hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="config")(_run)


def main() -> None:
    """``python -m rlzoo``: Hydra composes conf/config.yaml with the command line, checking each top-level value's
    type against ``rlzoo.config.RunConfig``, then calls ``_run``. A type error is raised while composing, before
    ``_run``, where Hydra would print it over several lines with exit code 1; here it gets the one line and exit
    code 2 of every other config error. Hydra lets its exceptions through only with HYDRA_FULL_ERROR=1, so that is
    set for the call; the user's own setting (``_FULL_ERROR``) still decides between one line and a traceback."""
    global _MAIN_PROCESS
    _MAIN_PROCESS = True
    previous = os.environ.get("HYDRA_FULL_ERROR")
    os.environ["HYDRA_FULL_ERROR"] = "1"
    sweep = any(a in ("-m", "--multirun") for a in sys.argv[1:])
    try:
        if sweep:
            _catch_stop_signals(forward=True)
        _hydra_main()
        if sweep and _SWEEP_STOP:
            where = rundir.LAST_SWEEP_DIR[0] if rundir.LAST_SWEEP_DIR else "<the sweep directory>"
            print(f"rlzoo: sweep stopped by {signal.Signals(_SWEEP_STOP[0]).name}: each running job wrote a "
                  f"checkpoint and stopped, the others did not start; continue the sweep with: "
                  f"{sweep_hint(sys.argv[1:], where)}", file=sys.stderr)
            sys.exit(128 + _SWEEP_STOP[0])
    except KeyboardInterrupt:
        if _FULL_ERROR:
            raise
        print("rlzoo: interrupted (Ctrl-C) before the run began: nothing was kept", file=sys.stderr)
        sys.exit(130)
    except Exception as e:
        if _FULL_ERROR:
            raise
        if type(e).__name__ == "TerminatedWorkerError":  # joblib: a sweep's worker process was killed outright
            where = rundir.LAST_SWEEP_DIR[0] if rundir.LAST_SWEEP_DIR else "<the sweep directory>"
            print(f"rlzoo: error: a worker process of the sweep was killed ({_first_line(e)}); its job stopped "
                  f"at its last checkpoint, finished jobs are complete: continue the sweep with: "
                  f"{sweep_hint(sys.argv[1:], where)}", file=sys.stderr)
            sys.exit(1)
        # A sweep's worker process re-raises a ConfigError (it reads HYDRA_FULL_ERROR=1 at import).
        message = str(e) if isinstance(e, ConfigError) else rlzoo_config.type_error(e)
        if message is not None:
            print(f"rlzoo: error: {message}", file=sys.stderr)
            sys.exit(2)
        hint = group_key_hint(e)
        if hint is not None:
            print(f"rlzoo: error: {hint}", file=sys.stderr)
            sys.exit(2)
        if isinstance(e, CompactHydraException):  # e.g. an unknown group option: Hydra's message, as Hydra prints it
            print(e, file=sys.stderr)
            if isinstance(e.__cause__, OmegaConfBaseException):
                print(e.__cause__, file=sys.stderr)
            print("\nSet the environment variable HYDRA_FULL_ERROR=1 for a complete stack trace.", file=sys.stderr)
            sys.exit(1)
        raise
    finally:
        if previous is None:
            os.environ.pop("HYDRA_FULL_ERROR", None)
        else:
            os.environ["HYDRA_FULL_ERROR"] = previous
