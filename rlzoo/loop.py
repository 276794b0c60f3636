"""The training loop: act -> step -> store -> learn -> sync -> log, for P members in lockstep."""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass, field, fields
from typing import Any, Callable

import numpy as np

from rlzoo.guards import check_env_output, check_finite
from rlzoo.seeding import EXPLORATION, evaluation_seeds, global_rng_state, load_global_rng_state, member_rngs


def epsilon_greedy(agent, obs: np.ndarray, epsilon: float, rngs, num_actions: int, need_q: bool = False,
                   legal: np.ndarray | None = None):
    """Each member explores with probability ``epsilon`` (a uniformly random action), else acts greedily,
    breaking ties between equal Q-values uniformly at random; every draw comes from the member's own
    generator. The Q-network is evaluated only if some member acts greedily or ``need_q`` is set.

    One uniform ``u`` per member and step decides both: the member explores if ``u < epsilon``, and
    then takes action ``floor(u / epsilon * num_actions)``, uniform over the actions given ``u < epsilon``.

    ``legal`` (``[P, A]``, nonzero = legal; an environment's ``info["action_mask"]``): each member explores,
    maximises and reports ``max_q`` over its legal actions only. Returns ``(actions [P], max_q [P] or None)``.
    """
    if legal is not None:
        return _masked_epsilon_greedy(agent, obs, epsilon, rngs, need_q, legal)
    u = [rng.random() for rng in rngs]
    scale, last = (num_actions / epsilon if epsilon > 0 else 0.0), num_actions - 1
    explore = [x < epsilon for x in u]
    if all(explore) and not need_q:
        return np.array([min(int(x * scale), last) for x in u], dtype=np.int64), None
    q = agent.q_values(obs)  # [P, A]
    # Per member in plain Python: numpy's per-call overhead dominates at one row of a few actions.
    actions, max_q = [], []
    for i, row in enumerate(q.tolist()):
        best = max(row)
        max_q.append(best)
        if explore[i]:
            actions.append(min(int(u[i] * scale), last))
        elif row.count(best) > 1:
            actions.append(rngs[i].choice(np.array([a for a, v in enumerate(row) if v == best])))
        else:
            actions.append(row.index(best))
    return np.array(actions, dtype=np.int64), np.array(max_q, dtype=q.dtype)


def _masked_epsilon_greedy(agent, obs, epsilon, rngs, need_q, legal):
    """``epsilon_greedy`` over each member's legal actions (the same draws: one ``u``, then a tie-break)."""
    u = [rng.random() for rng in rngs]
    explore = [x < epsilon for x in u]
    allowed = [np.flatnonzero(m).tolist() for m in np.asarray(legal)]
    q = agent.q_values(obs) if need_q or not all(explore) else None
    actions, max_q = [], []
    for i, ok in enumerate(allowed):
        row = None if q is None else [v for a, v in enumerate(q[i].tolist()) if a in ok]
        best = None if row is None else max(row)
        max_q.append(best)
        if explore[i]:
            actions.append(ok[min(int(u[i] / epsilon * len(ok)), len(ok) - 1)])
        elif row.count(best) > 1:
            actions.append(rngs[i].choice(np.array([a for a, v in zip(ok, row) if v == best])))
        else:
            actions.append(ok[row.index(best)])
    return np.array(actions, dtype=np.int64), (None if q is None else np.array(max_q, dtype=q.dtype))


def action_mask(info: dict, use: bool) -> np.ndarray | None:
    """The legal actions an environment reports (``info["action_mask"]``, ``[P, A]``) when the run uses them."""
    return np.asarray(info["action_mask"]) if use and "action_mask" in info else None


def discounted_returns(rewards: list[float], gamma: float) -> np.ndarray:
    """Monte-Carlo return from every step of an episode: ``G_t = r_t + gamma * G_{t+1}``."""
    out, g = np.empty(len(rewards)), 0.0
    for t in range(len(rewards) - 1, -1, -1):
        g = rewards[t] + gamma * g
        out[t] = g
    return out


def value_estimate_vs_return(max_q: list[float], rewards: list[float], gamma: float, cut: bool,
                             tail_weight: float = 0.01) -> dict:
    """The overestimation measure of one finished episode: the mean of ``max_a Q(s_t, a)`` and the
    mean Monte-Carlo return ``G_t`` over its states.

    If the episode was ``cut`` by a time limit, ``G_t`` misses the rewards after the cut, weighted by
    ``gamma ** (T - t)``; only the states where that weight is below ``tail_weight`` are used (none,
    and both values are NaN, if the episode is shorter than that horizon).
    """
    keep = len(rewards)
    if cut:
        if gamma <= 0:  # the cut-off rewards weigh gamma ** (T - t) = 0: every state's return is exact
            horizon = 0
        else:
            horizon = math.inf if gamma >= 1.0 else math.ceil(math.log(tail_weight) / math.log(gamma))
        keep = max(0, len(rewards) - horizon) if horizon != math.inf else 0
    if keep == 0:
        return dict(q_estimate=float("nan"), mc_return=float("nan"))
    return dict(q_estimate=float(np.mean(max_q[:keep])),
                mc_return=float(np.mean(discounted_returns(rewards, gamma)[:keep])))


def true_next_obs(next_obs: np.ndarray, done_members: np.ndarray, info: dict) -> np.ndarray:
    """With same-step autoreset, finished members (indices ``done_members``) already show their next
    episode's first observation; put their real last observation back for the replay memory."""
    if not len(done_members):
        return next_obs
    real = next_obs.copy()
    for i in done_members:
        real[i] = info["final_obs"][i]
    return real


@dataclass
class LoopState:
    """Everything the loop carries from one step to the next (a checkpoint saves it)."""

    population: int
    step: int = 0
    obs: np.ndarray | None = None
    episodes: np.ndarray = None  # finished training episodes per member
    eval_episodes: np.ndarray = None
    ep_return: np.ndarray = None  # raw game score of the running episode
    ep_length: np.ndarray = None
    ep_max_q: list = None  # per member: max_a Q(s_t, a) at every step of the running episode
    ep_rewards: list = None  # per member: learning rewards of the running episode
    recent: list = field(default_factory=list)  # last finished return per member
    explore_rngs: list = None  # per-member exploration generators (created by run())
    metrics: dict | None = None  # the last learner update's metrics, logged at the next metrics row
    clock: float = 0.0  # training seconds before this run() call (a resumed run's time column continues)
    legal: np.ndarray | None = None  # [P, A] legal actions in obs, where the run uses the env's action masks

    def __post_init__(self):
        P = self.population
        for name, dtype in (("episodes", np.int64), ("eval_episodes", np.int64), ("ep_return", np.float64),
                            ("ep_length", np.int64)):
            if getattr(self, name) is None:
                setattr(self, name, np.zeros(P, dtype=dtype))
        self.ep_max_q = self.ep_max_q or [[] for _ in range(P)]
        self.ep_rewards = self.ep_rewards or [[] for _ in range(P)]
        self.recent = self.recent or [None] * P

    def state_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def restart_episodes(self, obs) -> None:
        """The running episodes start again from ``obs`` (environments whose state could not be restored)."""
        self.obs = obs
        self.ep_return[:], self.ep_length[:] = 0.0, 0
        self.ep_max_q, self.ep_rewards = [[] for _ in range(self.population)], [[] for _ in range(self.population)]


def evaluate(agent, envs, episodes: int, epsilon: float, rngs, num_actions: int, seeds=None,
             use_action_mask: bool = False, gamma: float | None = None, clip_rewards: bool = False):
    """Play ``episodes`` full episodes per member; returns per member a list of (return, length).
    Members that have their episodes keep stepping (the environments step together) until all have.

    With ``gamma`` each entry is ``(return, length, q_estimate, mc_return)``: the overestimation measure
    of :func:`value_estimate_vs_return` on the evaluated policy's own episodes (the learning rewards:
    their sign with ``clip_rewards``). With ``epsilon=0`` this compares the value estimates with the
    true discounted return of the greedy policy they define (van Hasselt et al. 2016, section 3)."""
    obs, info = envs.reset(seed=seeds)
    legal = action_mask(info, use_action_mask)
    P = len(rngs)
    results = [[] for _ in range(P)]
    ret, length = np.zeros(P), np.zeros(P, dtype=np.int64)
    ep_max_q, ep_rewards = [[] for _ in range(P)], [[] for _ in range(P)]
    while min(len(r) for r in results) < episodes:
        actions, max_q = epsilon_greedy(agent, obs, epsilon, rngs, num_actions, need_q=gamma is not None, legal=legal)
        obs, reward, terminated, truncated, info = envs.step(actions)
        legal = action_mask(info, use_action_mask)
        ret += reward
        length += 1
        if gamma is not None:
            learn_reward = np.sign(reward) if clip_rewards else reward
            for i in range(P):
                ep_max_q[i].append(float(max_q[i]))
                ep_rewards[i].append(float(learn_reward[i]))
        for i in np.flatnonzero(info.get("game_over", terminated | truncated)):  # episodic life: whole games
            if len(results[i]) < episodes:
                if gamma is None:
                    results[i].append((float(ret[i]), int(length[i])))
                else:
                    cut = bool(truncated[i] and not terminated[i])
                    q = value_estimate_vs_return(ep_max_q[i], ep_rewards[i], gamma, cut)
                    results[i].append((float(ret[i]), int(length[i]), q["q_estimate"], q["mc_return"]))
            ret[i], length[i], ep_max_q[i], ep_rewards[i] = 0.0, 0, [], []
    return results


@dataclass(frozen=True)
class Settings:
    """The loop's schedule: when to act greedily, learn, evaluate and log."""

    total_steps: int  # environment steps per member
    learning_starts: int  # first learner update at this step
    train_freq: int  # one learner update every train_freq steps ...
    epsilon: Callable[[int], float]  # exploration rate at a step
    gamma: float  # for the overestimation measure (the agent has its own)
    gradient_steps: int = 1  # ... of this many gradient steps
    eval_every: int = 0  # 0: never
    eval_episodes: int = 10
    eval_epsilon: float = 0.0
    log_every: int = 1000
    clip_rewards: bool = False  # learn from sign(reward); returns.csv keeps the game score
    log_q_estimates: bool = True  # evaluate Q at every step to log max-Q against the Monte-Carlo return
    nan_check: bool = True  # stop when a loss or Q-value becomes NaN or infinite
    action_mask: bool = False  # act only among the legal actions the env reports in info["action_mask"]


@dataclass
class Run:
    """The parts of one training run (``rlzoo.train.build`` makes them)."""

    envs: Any  # population vector env, member i seeded with seeds[i]
    eval_envs: Any
    spec: Any  # rlzoo.envs.EnvSpec
    agent: Any  # rlzoo.agents.base.Agent
    replay: Any  # rlzoo.replay.Replay
    logger: Any  # rlzoo.io.tables.RunLogger
    seeds: list[int]
    settings: Settings
    device: Any = None
    state: LoopState | None = None  # a resumed run's loop state; run() leaves the final one here
    # Who acts: a callable like epsilon_greedy, or None for epsilon_greedy on the agent's Q-values (policy
    # evaluation acts with a fixed policy: rlzoo.policy_evaluation.FixedPolicy)
    behaviour: Callable | None = None
    probes: list = field(default_factory=list)  # probe(agent, step) after each step's learning; close() at the end

    def state_dict(self) -> dict:
        """Everything that continues this run exactly (each part serialises itself). The evaluation
        environments are not in it: every evaluation reseeds them."""
        return {"agent": self.agent.state_dict(), "replay": self.replay.state_dict(), "envs": self.envs.state_dict(),
                "loop": self.state.state_dict(), "rng": global_rng_state()}

    def load_state_dict(self, state: dict) -> None:
        """Restore a freshly built run. Environments that cannot save their state (Atari emulators, MinAtar)
        start new episodes, seeded with ``seed + step``, and the replay starts new frame segments."""
        self.agent.load_state_dict(state["agent"])
        self.replay.load_state_dict(state["replay"])
        self.state = LoopState(**state["loop"])
        if self.envs.exact_state:
            self.envs.load_state_dict(state["envs"])
        else:
            obs, info = self.envs.reset(seed=[int(s) + self.state.step for s in self.seeds])
            self.state.restart_episodes(obs)
            self.state.legal = action_mask(info, self.settings.action_mask)
            self.replay.restart_episodes()
        load_global_rng_state(state["rng"])

    def close(self) -> None:
        self.logger.close()
        self.envs.close()
        self.eval_envs.close()
        for probe in self.probes:
            probe.close()


def run(r: Run, progress=None, checkpoint=None, on_evaluation=()) -> LoopState:
    """Train every member for ``settings.total_steps`` environment steps, continuing from ``r.state``.

    ``progress``: ``rlzoo.progress.Progress`` or None; ``checkpoint``: ``rlzoo.io.checkpoint.Checkpointer`` or
    None, called when ``state.step >= checkpoint.next_at`` (it also asks the loop to stop after a signal);
    ``on_evaluation``: callables ``(step, member_means)`` called after each evaluation with every member's
    mean return.
    ``log_q_estimates`` evaluates the Q-network at every step (also when all members explore) to log,
    per training episode, the mean ``max_a Q(s_t, a)`` over the states visited and the mean discounted
    Monte-Carlo return from them (the overestimation measure of van Hasselt et al. 2016).
    """
    envs, eval_envs, agent, replay, logger, seeds, cfg = r.envs, r.eval_envs, r.agent, r.replay, r.logger, r.seeds, r.settings
    num_actions, total_steps, gamma, log_q_estimates = r.spec.num_actions, cfg.total_steps, cfg.gamma, cfg.log_q_estimates
    P = len(seeds)
    s = r.state = r.state or LoopState(P)
    if s.explore_rngs is None:
        s.explore_rngs = member_rngs(seeds, EXPLORATION)
    explore_rngs = s.explore_rngs
    self_exploring = bool(getattr(agent, "self_exploring", False))
    act = r.behaviour or epsilon_greedy
    if s.obs is None:
        s.obs, info = envs.reset(seed=list(seeds))
        s.legal = action_mask(info, cfg.action_mask)
    start = time.perf_counter() - s.clock
    window_t, window_step = start, s.step
    while s.step < total_steps:
        s.step += 1
        eps = cfg.epsilon(s.step) if s.step > cfg.learning_starts else 1.0  # uniform random until learning starts
        if self_exploring and s.step > cfg.learning_starts:
            eps = 0.0  # the agent's own exploration (noisy nets) replaces epsilon
        actions, max_q = act(agent, s.obs, eps, explore_rngs, num_actions, need_q=log_q_estimates, legal=s.legal)
        next_obs, reward, terminated, truncated, info = envs.step(actions)
        if cfg.nan_check:  # a NaN or inf from the environment is named as such, not as a diverged loss
            check_env_output(next_obs, reward, s.step, seeds, r.spec.name)
        done = np.flatnonzero(terminated | truncated)
        learn_reward = np.sign(reward) if cfg.clip_rewards else reward
        replay.add(s.obs, actions, learn_reward, true_next_obs(next_obs, done, info), terminated, truncated)
        s.ep_return += reward
        s.ep_length += 1
        if log_q_estimates:
            for i in range(P):
                s.ep_max_q[i].append(float(max_q[i]))
                s.ep_rewards[i].append(float(learn_reward[i]))
        # An episode in returns.csv is a whole game: with episodic life (Atari) a lost life is terminal
        # for the learner but the env marks real game ends in info["game_over"].
        for i in (np.flatnonzero(info["game_over"]) if "game_over" in info else done):
            s.episodes[i] += 1
            cut = bool(truncated[i] and not terminated[i])
            q_est = value_estimate_vs_return(s.ep_max_q[i], s.ep_rewards[i], gamma, cut) if log_q_estimates else {}
            logger.episode(i, phase="train", step=s.step, episode=int(s.episodes[i]), **{"return": float(s.ep_return[i])},
                           length=int(s.ep_length[i]), truncated=int(cut),
                           time=time.perf_counter() - start, **q_est)
            s.recent[i] = float(s.ep_return[i])
            s.ep_return[i], s.ep_length[i], s.ep_max_q[i], s.ep_rewards[i] = 0.0, 0, [], []
        s.obs = next_obs
        s.legal = action_mask(info, cfg.action_mask)

        if s.step >= cfg.learning_starts and s.step % cfg.train_freq == 0:
            for _ in range(cfg.gradient_steps):
                batch = replay.sample()
                s.metrics, td_error = agent.learn(batch, step=s.step)
                replay.update_priorities(batch.indices, td_error)
                if cfg.nan_check:
                    check_finite(s.metrics, s.step, seeds)
        for probe in r.probes:
            probe(agent, s.step)

        if cfg.eval_every and s.step % cfg.eval_every == 0:
            env_seeds, eval_rngs = evaluation_seeds(seeds, s.step)
            with getattr(agent, "evaluating", contextlib.nullcontext)():  # e.g. noisy layers: their mean weights
                results = evaluate(agent, eval_envs, cfg.eval_episodes, cfg.eval_epsilon, eval_rngs, num_actions,
                                   seeds=env_seeds, use_action_mask=cfg.action_mask,
                                   gamma=gamma if log_q_estimates else None, clip_rewards=cfg.clip_rewards)
            for i, member_results in enumerate(results):
                for ret, length, *q in member_results:
                    s.eval_episodes[i] += 1
                    q_est = dict(q_estimate=q[0], mc_return=q[1]) if q else {}
                    logger.episode(i, phase="eval", step=s.step, episode=int(s.eval_episodes[i]),
                                   **{"return": ret}, length=length, time=time.perf_counter() - start, **q_est)
            means = [float(np.mean([r[0] for r in m])) for m in results]
            for hook in on_evaluation:  # e.g. the progress line, the best-model saver: (step, member means)
                hook(s.step, means)

        if s.step % cfg.log_every == 0 or s.step == total_steps:
            now = time.perf_counter()
            sps = (s.step - window_step) / max(now - window_t, 1e-9)
            window_t, window_step = now, s.step
            m = {k: v.cpu().numpy() for k, v in s.metrics.items()} if s.metrics else {}
            for i in range(P):
                logger.metric(i, step=s.step, updates=agent.updates, epsilon=eps, sps=sps,
                              time=now - start, **{k: float(v[i]) for k, v in m.items()})
            if progress is not None:
                progress.update(s.step, sps, s.recent, force=s.step == total_steps)
        elif progress is not None and s.step % 100 == 0:
            progress.update(s.step, (s.step - window_step) / max(time.perf_counter() - window_t, 1e-9), s.recent)

        if checkpoint is not None and s.step >= checkpoint.next_at:  # every checkpoint_every steps, and on SIGTERM
            s.clock = time.perf_counter() - start
            checkpoint.save(s)
            if checkpoint.stop_requested:
                break
    return s
