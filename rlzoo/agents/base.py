"""The agent protocol: what the training loop may ask of an agent, and nothing more.

Every tensor or array carries the population axis first (``P`` members). An agent owns its networks,
its optimizer and its target-network rule; the loop never reaches inside it.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np
import torch

from rlzoo.replay import Batch


class Agent(Protocol):
    updates: int  # learner updates done so far

    def q_values(self, obs: np.ndarray) -> np.ndarray:
        """Action values ``[P, A]`` for one observation per member (``obs``: ``[P, *obs_shape]``)."""

    def learn(self, batch: Batch, step: int | None = None) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """One update per member from its own minibatch (``batch.weights``, when set, weight each sample's
        loss), made at environment step ``step`` (the loop always passes it). Returns per-member metrics (each ``[P]``; ``loss`` and ``q_mean`` always) and the per-sample
        TD errors ``[P, B]`` (what a prioritized sampler turns into priorities)."""

    def state_dict(self) -> dict: ...

    def load_state_dict(self, state: dict) -> None: ...

    # Optional: ``evaluating()``, a context manager the loop evaluates inside (``DQNAgent``'s puts its network in
    # ``eval()`` mode, so noisy layers act with their mean weights); an agent without it evaluates as it acts.
    # ``self_exploring = True``: the agent explores by itself (noisy nets), and the loop acts greedily on its
    # values once learning has started (epsilon 0, whatever the schedule says).
