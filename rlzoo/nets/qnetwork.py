"""A Q-network is ``encoder -> torso -> head`` and maps ``[P, B, *obs_shape]`` to ``[P, B, A]``."""

from __future__ import annotations

import torch
from torch import nn


class QNetwork(nn.Module):
    """``encoder -> torso -> head``; maps ``[P, B, *obs_shape]`` to ``[P, B, A]``."""

    def __init__(self, encoder: nn.Module, torso: nn.Module, head: nn.Module):
        super().__init__()
        self.encoder, self.torso, self.head = encoder, torso, head

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        # Calling .forward directly skips nn.Module.__call__'s hook dispatch (no hooks are used here);
        # at one observation per step that dispatch costs as much as the small matmuls themselves.
        return self.head.forward(self.torso.forward(self.encoder.forward(obs)))
