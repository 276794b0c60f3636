"""Heads: features ``[P, B, F]`` to Q-values ``[P, B, A]`` (or, for C51, logits ``[P, B, A, num_atoms]``),
chosen by the agent's config (``head``)."""

from __future__ import annotations

from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from rlzoo.nets.layers import PopLinear

# ``layer``: how a head makes each of its linear layers, ``(in_features, out_features, generators) -> module``;
# ``PopLinear``, or ``functools.partial(PopNoisyLinear, sigma0=...)`` for noisy nets (Fortunato et al. 2018).
Layer = Callable[[int, int, Sequence[torch.Generator]], nn.Module]


class QHead(nn.Module):
    """Plain linear Q head: ``Q(s, .) = W phi(s) + b``."""

    def __init__(self, in_features: int, num_actions: int, generators: Sequence[torch.Generator],
                 layer: Layer = PopLinear):
        super().__init__()
        self.q = layer(in_features, num_actions, generators)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.q.forward(features)


class DuelingHead(nn.Module):
    """Wang et al. 2016: separate value and advantage streams,
    ``Q(s, a) = V(s) + A(s, a) - mean_a' A(s, a')``.

    ``hidden`` > 0 gives each stream its own hidden layer of that width (the paper used 512 on Atari).
    """

    def __init__(self, in_features: int, num_actions: int, generators: Sequence[torch.Generator],
                 hidden: int = 0, layer: Layer = PopLinear):
        super().__init__()
        self.hidden = int(hidden)
        width = self.hidden or in_features
        if self.hidden:
            self.value_hidden = layer(in_features, width, generators)
            self.adv_hidden = layer(in_features, width, generators)
        self.value = layer(width, 1, generators)
        self.advantage = layer(width, num_actions, generators)

    def streams(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(V [P, B, 1], A [P, B, num_actions])``."""
        v_in = a_in = features
        if self.hidden:
            v_in, a_in = F.relu(self.value_hidden(features)), F.relu(self.adv_hidden(features))
        return self.value(v_in), self.advantage(a_in)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        v, a = self.streams(features)
        return v + a - a.mean(dim=-1, keepdim=True)


class _Categorical(nn.Module):
    """What the categorical heads share: the ``support`` (a buffer, rebuilt from the config, not saved) and the
    expected return of their logits."""

    def _set_support(self, num_atoms: int, v_min: float, v_max: float) -> None:
        if num_atoms < 2:
            raise ValueError(f"agent.head.num_atoms must be >= 2, got {num_atoms}")
        if not v_min < v_max:
            raise ValueError(f"agent.head.v_min must be smaller than agent.head.v_max, got v_min={v_min} v_max={v_max}")
        self.num_atoms = int(num_atoms)
        self.register_buffer("support", torch.linspace(float(v_min), float(v_max), self.num_atoms), persistent=False)

    def q_values(self, logits: torch.Tensor) -> torch.Tensor:
        """``[..., A, N]`` logits -> ``[..., A]`` expected returns."""
        return expected_value(logits.softmax(dim=-1), self.support)


class CategoricalHead(_Categorical):
    """C51 (Bellemare et al. 2017): per action, logits over ``num_atoms`` returns evenly spaced on
    ``[v_min, v_max]`` (the ``support``); maps features ``[P, B, F]`` to logits ``[P, B, A, num_atoms]``.
    ``Q(s, a) = sum_i z_i softmax(logits(s, a))_i`` (``q_values``). ``hidden`` > 0: a hidden layer of that width
    first (ReLU), as the dueling form's streams have, so that swapping one head for the other changes only the
    dueling structure."""

    def __init__(self, in_features: int, num_actions: int, generators: Sequence[torch.Generator],
                 num_atoms: int = 51, v_min: float = -10.0, v_max: float = 10.0, hidden: int = 0,
                 layer: Layer = PopLinear):
        super().__init__()
        self._set_support(num_atoms, v_min, v_max)
        self.num_actions, self.hidden = int(num_actions), int(hidden)
        if self.hidden:
            self.hidden_layer = layer(in_features, self.hidden, generators)
        self.logits = layer(self.hidden or in_features, self.num_actions * self.num_atoms, generators)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        if self.hidden:
            features = F.relu(self.hidden_layer(features))
        out = self.logits(features)
        return out.reshape(*out.shape[:-1], self.num_actions, self.num_atoms)


class DuelingCategoricalHead(_Categorical):
    """The dueling head of Rainbow (Hessel et al. 2018) for C51: value and advantage streams over the atoms,
    combined on the logits, ``logits(s, a) = V(s) + A(s, a) - mean_a' A(s, a')`` (each ``[num_atoms]``), then a
    softmax over the atoms per action. ``hidden`` > 0: each stream has its own hidden layer of that width."""

    def __init__(self, in_features: int, num_actions: int, generators: Sequence[torch.Generator],
                 num_atoms: int = 51, v_min: float = -10.0, v_max: float = 10.0, hidden: int = 0,
                 layer: Layer = PopLinear):
        super().__init__()
        self._set_support(num_atoms, v_min, v_max)
        self.num_actions, self.hidden = int(num_actions), int(hidden)
        width = self.hidden or in_features
        if self.hidden:
            self.value_hidden = layer(in_features, width, generators)
            self.adv_hidden = layer(in_features, width, generators)
        self.value = layer(width, self.num_atoms, generators)
        self.advantage = layer(width, self.num_actions * self.num_atoms, generators)

    def streams(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(V [P, B, 1, N], A [P, B, num_actions, N])``, on the logits."""
        v_in = a_in = features
        if self.hidden:
            v_in, a_in = F.relu(self.value_hidden(features)), F.relu(self.adv_hidden(features))
        v, a = self.value(v_in), self.advantage(a_in)
        return v.unsqueeze(-2), a.reshape(*a.shape[:-1], self.num_actions, self.num_atoms)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        v, a = self.streams(features)
        return v + a - a.mean(dim=-2, keepdim=True)


def make_head(in_features: int, num_actions: int, generators: Sequence[torch.Generator], dueling: bool = True,
              distributional: bool = True, num_atoms: int = 51, v_min: float = -10.0, v_max: float = 10.0,
              hidden: int = 0, layer: Layer = PopLinear) -> nn.Module:
    """The head two switches select (Rainbow's ablations, ``rlzoo.agents.rainbow``): ``DuelingCategoricalHead``,
    ``CategoricalHead``, ``DuelingHead`` or ``QHead``. The support keys apply to the distributional heads only;
    ``hidden`` to all but ``QHead`` (which has no hidden layer: ``hidden`` > 0 with neither switch is refused)."""
    if distributional:
        cls = DuelingCategoricalHead if dueling else CategoricalHead
        return cls(in_features, num_actions, generators, num_atoms=num_atoms, v_min=v_min, v_max=v_max,
                   hidden=hidden, layer=layer)
    if dueling:
        return DuelingHead(in_features, num_actions, generators, hidden=hidden, layer=layer)
    if hidden:
        raise ValueError(f"agent.head.hidden={hidden}: the plain Q head (dueling and distributional both off) has "
                         f"no hidden layer; set agent.head.hidden=0 or widen the torso (network.hidden_sizes)")
    return QHead(in_features, num_actions, generators, layer=layer)


def expected_value(probs: torch.Tensor, support: torch.Tensor) -> torch.Tensor:
    """``sum_i z_i p_i`` over the last axis: ``[..., N]`` -> ``[...]``."""
    return (probs * support).sum(dim=-1)
