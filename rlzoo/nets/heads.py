"""Heads: features ``[P, B, F]`` to Q-values ``[P, B, A]``, chosen by the agent's config (``head``)."""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from rlzoo.nets.layers import PopLinear


class QHead(nn.Module):
    """Plain linear Q head: ``Q(s, .) = W phi(s) + b``."""

    def __init__(self, in_features: int, num_actions: int, generators: Sequence[torch.Generator]):
        super().__init__()
        self.q = PopLinear(in_features, num_actions, generators)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.q.forward(features)


class DuelingHead(nn.Module):
    """Wang et al. 2016: separate value and advantage streams,
    ``Q(s, a) = V(s) + A(s, a) - mean_a' A(s, a')``.

    ``hidden`` > 0 gives each stream its own hidden layer of that width (the paper used 512 on Atari).
    """

    def __init__(self, in_features: int, num_actions: int, generators: Sequence[torch.Generator],
                 hidden: int = 0):
        super().__init__()
        self.hidden = int(hidden)
        width = self.hidden or in_features
        if self.hidden:
            self.value_hidden = PopLinear(in_features, width, generators)
            self.adv_hidden = PopLinear(in_features, width, generators)
        self.value = PopLinear(width, 1, generators)
        self.advantage = PopLinear(width, num_actions, generators)

    def streams(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(V [P, B, 1], A [P, B, num_actions])``."""
        v_in = a_in = features
        if self.hidden:
            v_in, a_in = F.relu(self.value_hidden(features)), F.relu(self.adv_hidden(features))
        return self.value(v_in), self.advantage(a_in)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        v, a = self.streams(features)
        return v + a - a.mean(dim=-1, keepdim=True)
