"""Torsos: observations ``[P, B, *obs_shape]`` to features ``[P, B, F]``, chosen with the ``network`` group.

The encoder turns raw observations into floats (one-hot for discrete states, /255 for uint8 pixels).
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from rlzoo.nets.layers import PopConv2d, PopLinear


class ObservationEncoder(nn.Module):
    """Raw observations ``[P, B, *obs_shape]`` to float features.

    ``num_states`` set: integer states become one-hot vectors. ``scale`` set (uint8 pixels): divide by it.
    Otherwise the observation is cast to float32. Image shapes are kept; vectors are flattened.
    """

    def __init__(self, obs_shape: Sequence[int], num_states: int | None = None, scale: float | None = None,
                 flatten: bool = True):
        super().__init__()
        self.num_states, self.scale, self.flatten = num_states, scale, flatten
        if num_states is not None:
            self.out_shape: tuple[int, ...] = (num_states,)
        elif flatten:
            self.out_shape = (int(math.prod(obs_shape)),)
        else:
            self.out_shape = tuple(obs_shape)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        if self.num_states is not None:
            return F.one_hot(obs.long(), self.num_states).float()
        x = obs.float()
        if self.scale is not None:
            x = x / self.scale
        if self.flatten:
            x = x.flatten(start_dim=2)
        return x


class MLP(nn.Module):
    """Fully connected torso: ``in -> hidden[0] -> ... -> hidden[-1]`` with ReLU after every layer."""

    def __init__(self, in_shape: Sequence[int], generators: Sequence[torch.Generator],
                 hidden_sizes: Sequence[int] = (128, 128)):
        super().__init__()
        if len(in_shape) != 1:
            raise ValueError(f"the MLP torso takes flat observations, got shape {tuple(in_shape)}: "
                             "use a CNN torso (network=nature_cnn or network=minatar_cnn) for images")
        sizes = [int(in_shape[0]), *[int(h) for h in hidden_sizes]]
        self.layers = nn.ModuleList(PopLinear(i, o, generators) for i, o in zip(sizes[:-1], sizes[1:]))
        self.out_features = sizes[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = F.relu(layer.forward(x))  # .forward: skips nn.Module's hook machinery on the hot path
        return x


class ConvTorso(nn.Module):
    """Conv layers (ReLU after each) then fully connected layers (ReLU after each), per member.

    Input ``[P, B, C, H, W]`` floats; output ``[P, B, out_features]``.
    """

    def __init__(self, in_shape: Sequence[int], generators: Sequence[torch.Generator],
                 convs: Sequence[Sequence[int]], hidden_sizes: Sequence[int], name: str):
        super().__init__()
        if len(in_shape) != 3:
            raise ValueError(f"network={name} takes image observations [channels, height, width], got shape "
                             f"{tuple(in_shape)}: use network=mlp for vector observations")
        c, h, w = (int(x) for x in in_shape)
        self.population = len(generators)
        self.convs = nn.ModuleList()
        for out, k, stride in convs:
            conv = PopConv2d(c, int(out), int(k), int(stride), generators)
            h, w, c = conv.out_size(h), conv.out_size(w), int(out)
            if h < 1 or w < 1:
                raise ValueError(f"network={name} needs larger images than {tuple(in_shape)}")
            self.convs.append(conv)
        sizes = [c * h * w, *[int(x) for x in hidden_sizes]]
        self.fcs = nn.ModuleList(PopLinear(i, o, generators) for i, o in zip(sizes[:-1], sizes[1:]))
        self.out_features = sizes[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        P, B = x.shape[:2]
        x = x.transpose(0, 1).reshape(B, P * x.shape[2], *x.shape[3:])  # [B, P*C, H, W]
        for conv in self.convs:
            x = F.relu(conv(x))
        x = x.reshape(B, P, -1).transpose(0, 1)  # [P, B, C'*H'*W'] (each member's features in C, H, W order)
        for fc in self.fcs:
            x = F.relu(fc(x))
        return x


class NatureCNN(ConvTorso):
    """Mnih et al. 2015 torso: 32 8x8 stride 4, 64 4x4 stride 2, 64 3x3 stride 1, then 512 units
    (the head adds the output layer). Takes ``[4, 84, 84]`` stacks scaled to [0, 1]."""

    def __init__(self, in_shape: Sequence[int], generators: Sequence[torch.Generator],
                 convs: Sequence[Sequence[int]] = ((32, 8, 4), (64, 4, 2), (64, 3, 1)),
                 hidden_sizes: Sequence[int] = (512,)):
        super().__init__(in_shape, generators, convs, hidden_sizes, name="nature_cnn")


class MinAtarCNN(ConvTorso):
    """Young and Tian 2019 torso: 16 3x3 stride 1 filters, then 128 units. Takes ``[C, 10, 10]``."""

    def __init__(self, in_shape: Sequence[int], generators: Sequence[torch.Generator],
                 convs: Sequence[Sequence[int]] = ((16, 3, 1),), hidden_sizes: Sequence[int] = (128,)):
        super().__init__(in_shape, generators, convs, hidden_sizes, name="minatar_cnn")
