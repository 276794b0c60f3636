"""TD targets as pure functions: the one place where DQN and Double DQN differ.

Every tensor carries the population axis first: rewards ``[P, B]``, Q-values ``[P, B, A]``.
``terminated`` is 1 only for true terminal states; a time-limit truncation is *not* terminal,
so its target still bootstraps from the next state. ``gamma`` is a number, or a ``[P, B]`` tensor of
per-sample discounts (``gamma**k`` of n-step transitions, ``rlzoo.replay.nstep``).
"""

from __future__ import annotations

import torch


def td_target(reward: torch.Tensor, terminated: torch.Tensor, gamma: float | torch.Tensor,
              next_value: torch.Tensor) -> torch.Tensor:
    """``y = r + gamma * (1 - terminated) * V(s')``."""
    return reward + gamma * (1.0 - terminated.to(reward.dtype)) * next_value


def dqn_target(reward: torch.Tensor, terminated: torch.Tensor, gamma: float | torch.Tensor,
               q_next_target: torch.Tensor) -> torch.Tensor:
    """Mnih et al. 2015: the target network both selects and evaluates ``a'``."""
    return td_target(reward, terminated, gamma, q_next_target.max(dim=-1).values)


def double_dqn_target(reward: torch.Tensor, terminated: torch.Tensor, gamma: float | torch.Tensor,
                      q_next_target: torch.Tensor, q_next_online: torch.Tensor) -> torch.Tensor:
    """van Hasselt et al. 2016: the online network selects ``a'``, the target network evaluates it."""
    best = q_next_online.argmax(dim=-1, keepdim=True)
    return td_target(reward, terminated, gamma, q_next_target.gather(-1, best).squeeze(-1))


def expected_sarsa_target(reward: torch.Tensor, terminated: torch.Tensor, gamma: float,
                          q_next_target: torch.Tensor, next_probs: torch.Tensor) -> torch.Tensor:
    """Expected SARSA (van Seijen et al. 2009) for evaluating a fixed policy ``pi``: the target network's
    next-state values averaged under ``pi``, ``y = r + gamma * (1 - terminated) * sum_a' pi(a'|s') Q(s', a')``.
    ``next_probs`` ``[P, B, A]``: ``pi``'s action probabilities in each next state."""
    return td_target(reward, terminated, gamma, (next_probs.to(q_next_target.dtype) * q_next_target).sum(dim=-1))


# -- distributional (C51, Bellemare et al. 2017) -------------------------------------------------------------
# Return distributions on a fixed support of N atoms z_0 < ... < z_{N-1}, evenly spaced on [v_min, v_max];
# probabilities carry the atom axis last: [P, B, N], or [P, B, A, N] per action.

def categorical_projection(reward: torch.Tensor, discount: torch.Tensor | float, probs: torch.Tensor,
                           support: torch.Tensor) -> torch.Tensor:
    """Bellemare et al. 2017, Algorithm 1: the distribution of ``r + discount * Z`` (``Z`` with ``probs`` on
    ``support``) projected onto ``support``. Each shifted atom ``Tz_j``, clipped to ``[v_min, v_max]``, gives its
    probability to its two neighbouring atoms in proportion to closeness (all of it to an atom it lands on).

    ``reward [P, B]``; ``discount`` a number or ``[P, B]`` (``gamma * (1 - terminated)``: 0 for a terminal
    transition, whose target is all mass at ``r``); ``probs [P, B, N]``; ``support [N]``. Returns ``[P, B, N]``.
    """
    n = support.shape[-1]
    v_min, v_max = support[0], support[-1]
    if not isinstance(discount, torch.Tensor):
        discount = torch.as_tensor(discount, dtype=reward.dtype, device=reward.device)
    shifted = (reward.unsqueeze(-1) + discount.unsqueeze(-1) * support).clamp(v_min, v_max)  # Tz_j [P, B, N]
    b = (shifted - v_min) / ((v_max - v_min) / (n - 1))  # position on the atom grid, in [0, N - 1]
    lower, upper = b.floor(), b.ceil()
    # lower == upper: Tz_j is an atom and keeps all of p_j; else p_j splits as (upper - b, b - lower)
    to_lower = probs * (upper - b + (lower == upper).to(probs.dtype))
    to_upper = probs * (b - lower)
    out = torch.zeros_like(probs)
    out.scatter_add_(-1, lower.long().clamp(0, n - 1), to_lower)
    out.scatter_add_(-1, upper.long().clamp(0, n - 1), to_upper)
    return out


def _greedy_distribution(p_next: torch.Tensor, support: torch.Tensor, chooser: torch.Tensor) -> torch.Tensor:
    """``p_next [P, B, A, N]`` at ``argmax_a sum_i z_i chooser[..., a, i]``: ``[P, B, N]``."""
    best = (chooser * support).sum(dim=-1).argmax(dim=-1)  # [P, B]
    index = best[..., None, None].expand(*best.shape, 1, p_next.shape[-1])
    return p_next.gather(-2, index).squeeze(-2)


def categorical_dqn_target(reward: torch.Tensor, terminated: torch.Tensor, gamma, p_next_target: torch.Tensor,
                           support: torch.Tensor) -> torch.Tensor:
    """C51's target distribution ``[P, B, N]``: the target network's distribution at ``s'`` for its own greedy
    action (largest expected return), shifted by ``r``, discounted and projected."""
    p = _greedy_distribution(p_next_target, support, p_next_target)
    return categorical_projection(reward, gamma * (1.0 - terminated.to(reward.dtype)), p, support)


def double_categorical_target(reward: torch.Tensor, terminated: torch.Tensor, gamma, p_next_target: torch.Tensor,
                              support: torch.Tensor, p_next_online: torch.Tensor) -> torch.Tensor:
    """Double C51 (as in Rainbow, Hessel et al. 2018): the online network chooses ``a'`` by its expected
    return, the target network's distribution for ``a'`` is shifted, discounted and projected."""
    p = _greedy_distribution(p_next_target, support, p_next_online)
    return categorical_projection(reward, gamma * (1.0 - terminated.to(reward.dtype)), p, support)


def target_rule(double: bool, distributional: bool):
    """The target rule two switches select (Rainbow's ablations, ``rlzoo.agents.rainbow``): Double or not, on
    expected values (``dqn_target``, ``double_dqn_target``) or on return distributions (``categorical_dqn_target``,
    ``double_categorical_target``)."""
    if distributional:
        return double_categorical_target if double else categorical_dqn_target
    return double_dqn_target if double else dqn_target
