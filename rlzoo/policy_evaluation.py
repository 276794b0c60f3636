"""Policy evaluation with a Q-network (Wang et al. 2016, section 4.1): learn ``Q^pi`` of a fixed policy ``pi``
and measure the squared error to the exact ``Q^pi`` over training.

A run is an ordinary rlzoo run (the same loop, replay, optimizer, target network, CSVs) with three parts
swapped in by ``rlzoo.train`` when the config has a ``policy_evaluation`` node:

- the loop acts with ``pi`` (``FixedPolicy``, the loop's ``behaviour`` seam) instead of epsilon-greedy on the
  learned Q;
- the agent's TD target averages the next state's values under ``pi`` (``rlzoo.targets.expected_sarsa_target``,
  given ``pi``'s next-state probabilities by ``PolicyEvaluationAgent``);
- a probe writes ``q_error.csv``: per member and every ``every`` steps, the squared error of the Q-network
  against the exact ``Q^pi`` (dynamic programming on the environment's model), summed over states and actions
  (``se``, the paper's SE) and averaged (``mse``).

``pi`` is epsilon-greedy around the environment's optimal policy (the paper's: epsilon = 0.001).
The math (``optimal_q``, ``epsilon_greedy_probs``, ``policy_q``) is pure numpy on a ``TabularModel``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from rlzoo.agents.dqn import DQNAgent
from rlzoo.envs.corridor import TabularModel
from rlzoo.errors import ConfigError
from rlzoo.io.tables import CsvWriter

Q_ERROR_FILE = "q_error.csv"
Q_ERROR_COLUMNS = ("agent", "env", "seed", "step", "updates", "se", "mse")


def optimal_q(model: TabularModel, gamma: float, tol: float = 1e-12, max_iter: int = 1_000_000) -> np.ndarray:
    """``Q*`` ``[S, A]`` by value iteration (absorbing states: 0)."""
    if not 0.0 <= gamma < 1.0:
        raise ValueError(f"optimal_q needs gamma in [0, 1), got {gamma}")
    live = (~model.terminal).astype(float)
    q = np.zeros(model.next_state.shape)
    for _ in range(max_iter):
        v = np.where(model.absorbing, 0.0, q.max(axis=1))
        new = model.reward + gamma * live * v[model.next_state]
        if np.max(np.abs(new - q)) < tol:
            return np.where(model.absorbing[:, None], 0.0, new)
        q = new
    raise RuntimeError(f"value iteration did not converge in {max_iter} sweeps")


def epsilon_greedy_probs(q: np.ndarray, epsilon: float) -> np.ndarray:
    """``pi(a|s)`` ``[S, A]`` of the epsilon-greedy policy around ``argmax_a q[s, a]`` (the first maximum):
    ``epsilon / A`` for every action plus ``1 - epsilon`` for the greedy one."""
    if not 0.0 <= epsilon <= 1.0:
        raise ValueError(f"epsilon must be in [0, 1], got {epsilon}")
    S, A = q.shape
    probs = np.full((S, A), epsilon / A)
    probs[np.arange(S), q.argmax(axis=1)] += 1.0 - epsilon
    return probs


def policy_q(model: TabularModel, probs: np.ndarray, gamma: float) -> np.ndarray:
    """The exact ``Q^pi`` ``[S, A]`` of the policy ``probs`` ``[S, A]``: ``V^pi`` solves the linear system
    ``(I - gamma P_pi) V = r_pi`` (absorbing states have value 0), then
    ``Q(s, a) = r(s, a) + gamma * (1 - terminal(s, a)) * V(next(s, a))``."""
    S = model.num_states
    live = ~model.terminal & ~model.absorbing[:, None]  # transitions that continue the episode
    p_pi = np.zeros((S, S))
    np.add.at(p_pi, (np.repeat(np.arange(S), model.num_actions), model.next_state.ravel()),
              (probs * live).ravel())
    r_pi = np.where(model.absorbing, 0.0, (probs * model.reward).sum(axis=1))
    try:
        v = np.linalg.solve(np.eye(S) - gamma * p_pi, r_pi)
    except np.linalg.LinAlgError:
        raise ValueError("the policy's values are not finite (gamma = 1 and an episode that never ends)") from None
    q = model.reward + gamma * (~model.terminal) * v[model.next_state]
    return np.where(model.absorbing[:, None], 0.0, q)


class FixedPolicy:
    """A fixed stochastic policy ``probs`` ``[S, A]`` over the states ``state_of(obs)`` names.

    Called like the loop's ``epsilon_greedy`` (``(agent, obs, epsilon, rngs, num_actions, need_q)``), it
    ignores the exploration rate and the agent's values: each member draws its action from ``pi(.|s)`` with
    one uniform number from its own generator.
    """

    def __init__(self, probs: np.ndarray, state_of: Callable[[np.ndarray], np.ndarray]):
        self.probs = np.asarray(probs, dtype=np.float64)
        self.cumulative = np.cumsum(self.probs, axis=1)
        self.cumulative[:, -1] = 1.0  # rounding must not leave a gap above the last action
        self.state_of = state_of
        self._probs32 = torch.as_tensor(self.probs, dtype=torch.float32)

    def __call__(self, agent, obs: np.ndarray, epsilon: float, rngs, num_actions: int, need_q: bool = False,
                 legal=None):
        if legal is not None:
            raise ValueError("a fixed policy cannot follow an environment's action masks: set action_mask=false")
        states = self.state_of(obs)
        actions = np.array([int(np.searchsorted(self.cumulative[s], rng.random(), side="right"))
                            for s, rng in zip(states.tolist(), rngs)], dtype=np.int64)
        return actions, (agent.q_values(obs).max(axis=1) if need_q else None)

    def next_probs(self, next_obs: torch.Tensor) -> torch.Tensor:
        """``pi``'s probabilities ``[P, B, A]`` in the observed states ``[P, B, *obs_shape]``."""
        states = torch.as_tensor(self.state_of(next_obs.cpu().numpy()))
        return self._probs32[states].to(next_obs.device)


class PolicyEvaluationAgent(DQNAgent):
    """``DQNAgent`` whose TD target evaluates the fixed policy ``policy`` (a ``FixedPolicy``): ``target_fn`` is
    called as ``(reward, terminated, gamma, q_next_target, next_probs)`` with ``pi``'s probabilities in the
    sampled next states (``rlzoo.targets.expected_sarsa_target``). Everything else (loss, optimizer, clipping,
    target network and its sync, the numpy fast path, state_dict) is DQNAgent's: ``learn`` looks up the
    batch's next-state probabilities, and the rule DQNAgent sees is ``target_fn`` with them filled in."""

    def __init__(self, q_net, optimizer, target_fn: Callable, policy: FixedPolicy, **kwargs):
        self.policy, self.rule, self.next_probs = policy, target_fn, None
        super().__init__(q_net, optimizer, self.target_with_probs, **kwargs)

    def target_with_probs(self, reward, terminated, gamma, q_next_target):
        """``target_fn`` for the batch being learned (``learn`` set its next-state probabilities)."""
        return self.rule(reward, terminated, gamma, q_next_target, self.next_probs)

    def learn(self, batch, *args, **kwargs):
        self.next_probs = self.policy.next_probs(batch.next_obs)
        return super().learn(batch, *args, **kwargs)

    def q_table(self, obs: np.ndarray) -> np.ndarray:
        """Every member's Q-values ``[P, N, A]`` for the same ``N`` observations ``[N, *obs_shape]``."""
        P = next(iter(self.q_net.parameters())).shape[0]
        x = torch.as_tensor(obs, device=self.device).unsqueeze(0).expand(P, *obs.shape)
        with torch.inference_mode():
            return self.q_net(x).cpu().numpy()


class QErrorProbe:
    """Every ``every`` environment steps, one ``q_error.csv`` row per member: the squared error of its
    Q-values against ``q_true`` over the given states, summed over states and actions (``se``) and averaged
    (``mse``). ``observations`` ``[N, *obs_shape]`` and ``q_true`` ``[N, A]`` list the states to score."""

    def __init__(self, every: int, observations: np.ndarray, q_true: np.ndarray, out_dir: str | os.PathLike,
                 agent: str, env: str, seeds: Sequence[int]):
        if int(every) < 1:
            raise ValueError(f"policy_evaluation.every must be >= 1, got {every}")
        self.every, self.observations, self.q_true = int(every), np.asarray(observations), np.asarray(q_true)
        self.ids = [{"agent": agent, "env": env, "seed": int(s)} for s in seeds]
        self.writer = CsvWriter(Path(out_dir) / Q_ERROR_FILE, Q_ERROR_COLUMNS)

    def errors(self, agent) -> tuple[np.ndarray, np.ndarray]:
        """``(se [P], mse [P])`` of the agent's current Q-network."""
        sq = (agent.q_table(self.observations).astype(np.float64) - self.q_true) ** 2  # [P, N, A]
        return sq.sum(axis=(1, 2)), sq.mean(axis=(1, 2))

    def __call__(self, agent, step: int) -> None:
        if step % self.every:
            return
        se, mse = self.errors(agent)
        for i, ident in enumerate(self.ids):
            self.writer.write({**ident, "step": int(step), "updates": int(agent.updates), "se": float(se[i]),
                               "mse": float(mse[i])}, flush=False)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


def env_model(envs, name: str) -> TabularModel:
    """The model of the population's environment (every member plays the same MDP)."""
    try:
        return envs.call("model")[0]
    except AttributeError:
        raise ConfigError(f"policy_evaluation needs an environment whose model is known (env=corridor); "
                          f"{name} has none") from None


class PolicyEvaluation:
    """The fixed policy ``pi`` (epsilon-greedy around the optimal policy of ``model``) and its exact ``Q^pi``.

    ``policy`` acts for the loop and gives the agent's target its probabilities; ``probe(...)`` measures the
    Q-network against ``q_true`` on every state where the agent acts (absorbing states excluded).
    """

    def __init__(self, model: TabularModel, gamma: float, epsilon: float = 0.001, every: int = 100):
        self.model, self.gamma, self.epsilon, self.every = model, float(gamma), float(epsilon), int(every)
        if not 0.0 <= self.epsilon <= 1.0:
            raise ValueError(f"policy_evaluation.epsilon must be in [0, 1], got {epsilon}")
        if self.every < 1:
            raise ValueError(f"policy_evaluation.every must be >= 1, got {every}")
        self.probs = epsilon_greedy_probs(optimal_q(model, self.gamma), self.epsilon)
        self.q_true = policy_q(model, self.probs, self.gamma)
        self.policy = FixedPolicy(self.probs, model.state_of)

    def probe(self, out_dir, agent: str, env: str, seeds: Sequence[int]) -> QErrorProbe:
        keep = ~self.model.absorbing
        return QErrorProbe(self.every, self.model.observations[keep], self.q_true[keep], out_dir, agent, env, seeds)
