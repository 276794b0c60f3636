"""Population layers: ``P`` independent layers whose parameters are stacked on a leading member axis.

Member ``i`` draws its initial weights from its own generator (seeded with ``seed + i``), so it starts
exactly where a solo run with that seed starts.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn


def member_generators(seeds: Sequence[int]) -> list[torch.Generator]:
    """One CPU generator per member, for parameter initialisation."""
    return [torch.Generator().manual_seed(int(s)) for s in seeds]


class PopLinear(nn.Module):
    """``P`` independent linear layers applied with one batched matmul.

    Initialised like ``torch.nn.Linear`` (uniform in ``+-1/sqrt(in_features)``), member by member, and
    stored in its layout, ``weight[i]`` being ``[out, in]`` (with MKL, a batched matmul against the
    transposed view is 3x faster than against ``[in, out]`` storage when ``out`` is a handful of actions).
    """

    def __init__(self, in_features: int, out_features: int, generators: Sequence[torch.Generator]):
        super().__init__()
        bound = 1.0 / math.sqrt(in_features)
        self.in_features, self.out_features = in_features, out_features
        # Draw weight then bias for each member from that member's generator.
        weights, biases = [], []
        for g in generators:
            weights.append((torch.rand(out_features, in_features, generator=g) * 2 - 1) * bound)
            biases.append((torch.rand(out_features, generator=g) * 2 - 1) * bound)
        self.weight = nn.Parameter(torch.stack(weights))  # [P, out, in]
        self.bias = nn.Parameter(torch.stack(biases).unsqueeze(1))  # [P, 1, out]

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [P, B, in] -> [P, B, out]
        return torch.baddbmm(self.bias, x, self.weight.transpose(1, 2))


class PopConv2d(nn.Module):
    """``P`` independent conv layers applied as one grouped convolution (``groups=P``).

    Works in the grouped layout ``[B, P * C, H, W]``; weights are stored member-first
    ``[P, out, in, k, k]`` and initialised like ``torch.nn.Conv2d`` (uniform in ``+-1/sqrt(in*k*k)``
    for weight and bias), member by member from its own generator.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int,
                 generators: Sequence[torch.Generator]):
        super().__init__()
        self.population, self.stride = len(generators), int(stride)
        self.in_channels, self.out_channels, self.kernel_size = in_channels, out_channels, kernel_size
        fan_in = in_channels * kernel_size * kernel_size
        bound = 1.0 / math.sqrt(fan_in)
        weights, biases = [], []
        for g in generators:
            weights.append((torch.rand(out_channels, in_channels, kernel_size, kernel_size, generator=g) * 2 - 1) * bound)
            biases.append((torch.rand(out_channels, generator=g) * 2 - 1) * bound)
        self.weight = nn.Parameter(torch.stack(weights))  # [P, out, in, k, k]
        self.bias = nn.Parameter(torch.stack(biases))  # [P, out]

    def out_size(self, size: int) -> int:
        return (size - self.kernel_size) // self.stride + 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, P*in, H, W] -> [B, P*out, H', W']
        P, k = self.population, self.kernel_size
        return F.conv2d(x, self.weight.reshape(P * self.out_channels, self.in_channels, k, k),
                        self.bias.reshape(-1), stride=self.stride, groups=P)


def scaled_noise(x: torch.Tensor) -> torch.Tensor:
    """Fortunato et al. 2018, eq. 10-11: ``f(x) = sign(x) sqrt(|x|)``, applied to standard normal draws."""
    return x.sign() * x.abs().sqrt()


class PopNoisyLinear(nn.Module):
    """``P`` independent noisy linear layers with factorised Gaussian noise (Fortunato et al. 2018, section 3):
    ``y = (mu_w + sigma_w * eps_w) x + mu_b + sigma_b * eps_b`` with ``eps_w = f(eps_out) f(eps_in)^T`` and
    ``eps_b = f(eps_out)``, ``f(x) = sign(x) sqrt(|x|)``; ``mu`` and ``sigma`` are learned.

    Initialised as the paper's section 3.2 says for factorised noise: ``mu`` uniform in ``+-1/sqrt(in)``
    (weight then bias, member by member from its own generator, like ``PopLinear``) and every ``sigma``
    ``sigma0 / sqrt(in)``. The noise lives in the buffers ``eps_in [P, in]`` and ``eps_out [P, out]``
    (saved with the network), drawn by ``set_noise`` (``rlzoo.nets.noise.NoisyNets`` draws it per member from
    that member's own stream). In ``eval()`` mode the layer uses the mean weights ``mu`` only.
    """

    def __init__(self, in_features: int, out_features: int, generators: Sequence[torch.Generator],
                 sigma0: float = 0.5):
        super().__init__()
        if not sigma0 >= 0:
            raise ValueError(f"agent.head.layer.sigma0 (the noisy layers' initial noise scale) must be >= 0, "
                             f"got {sigma0}")
        bound = 1.0 / math.sqrt(in_features)
        self.in_features, self.out_features, self.sigma0 = in_features, out_features, float(sigma0)
        weights, biases = [], []
        for g in generators:
            weights.append((torch.rand(out_features, in_features, generator=g) * 2 - 1) * bound)
            biases.append((torch.rand(out_features, generator=g) * 2 - 1) * bound)
        P = len(generators)
        self.weight_mu = nn.Parameter(torch.stack(weights))  # [P, out, in]
        self.bias_mu = nn.Parameter(torch.stack(biases).unsqueeze(1))  # [P, 1, out]
        self.weight_sigma = nn.Parameter(torch.full((P, out_features, in_features), self.sigma0 * bound))
        self.bias_sigma = nn.Parameter(torch.full((P, 1, out_features), self.sigma0 * bound))
        self.register_buffer("eps_in", torch.zeros(P, in_features))
        self.register_buffer("eps_out", torch.zeros(P, out_features))

    def set_noise(self, eps_in: torch.Tensor, eps_out: torch.Tensor) -> None:
        """New factorised noise ``f(eps_in) [P, in]``, ``f(eps_out) [P, out]`` (already passed through ``f``).
        The buffers are replaced, not written in place: a graph built on the previous noise stays valid."""
        self.eps_in = eps_in.to(self.eps_in)
        self.eps_out = eps_out.to(self.eps_out)

    def weight_and_bias(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(W [P, out, in], b [P, 1, out])``: noisy in training mode, the means in ``eval()`` mode."""
        if not self.training:
            return self.weight_mu, self.bias_mu
        eps_out = self.eps_out.unsqueeze(-1)  # [P, out, 1]
        weight = self.weight_mu + self.weight_sigma * (eps_out * self.eps_in.unsqueeze(1))
        bias = self.bias_mu + self.bias_sigma * self.eps_out.unsqueeze(1)
        return weight, bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [P, B, in] -> [P, B, out]
        weight, bias = self.weight_and_bias()
        return torch.baddbmm(bias, x, weight.transpose(1, 2))
