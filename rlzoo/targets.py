"""TD targets as pure functions: the one place where DQN and Double DQN differ.

Every tensor carries the population axis first: rewards ``[P, B]``, Q-values ``[P, B, A]``.
``terminated`` is 1 only for true terminal states; a time-limit truncation is *not* terminal,
so its target still bootstraps from the next state.
"""

from __future__ import annotations

import torch


def td_target(reward: torch.Tensor, terminated: torch.Tensor, gamma: float,
              next_value: torch.Tensor) -> torch.Tensor:
    """``y = r + gamma * (1 - terminated) * V(s')``."""
    return reward + gamma * (1.0 - terminated.to(reward.dtype)) * next_value


def dqn_target(reward: torch.Tensor, terminated: torch.Tensor, gamma: float,
               q_next_target: torch.Tensor) -> torch.Tensor:
    """Mnih et al. 2015: the target network both selects and evaluates ``a'``."""
    return td_target(reward, terminated, gamma, q_next_target.max(dim=-1).values)


def double_dqn_target(reward: torch.Tensor, terminated: torch.Tensor, gamma: float,
                      q_next_target: torch.Tensor, q_next_online: torch.Tensor) -> torch.Tensor:
    """van Hasselt et al. 2016: the online network selects ``a'``, the target network evaluates it."""
    best = q_next_online.argmax(dim=-1, keepdim=True)
    return td_target(reward, terminated, gamma, q_next_target.gather(-1, best).squeeze(-1))
