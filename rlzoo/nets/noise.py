"""Noise for the noisy layers (``PopNoisyLinear``) of an agent's online and target networks.

Member ``i`` draws its noise from its own numpy generators, seeded with ``(seed + i, stream)``: one stream
for the online network and one for the target network, so the two are independent, and member ``i`` draws
exactly what a solo run with its seed draws, whatever the population. The draws per sample, in module order:
for every noisy layer, ``in + out`` standard normals per member, passed through ``f(x) = sign(x) sqrt(|x|)``.

When the agent draws (``rlzoo.agents.dqn.DQNAgent.learn``), following Fortunato et al. 2018 (section 3.1,
"NoisyNet-DQN"): before every update, fresh noise for the online network (used for ``Q(s, a)`` and, for
Double, for choosing ``a'``) and independent fresh noise for the target network; after the update, fresh
noise for acting, which then stays fixed until the next update. Evaluation uses the mean weights (the layers
in ``eval()`` mode), as Dopamine's ``NoisyNetwork`` does in ``eval_mode``, so a greedy evaluation is
deterministic given the environment's seed.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torch import nn

from rlzoo.nets.layers import PopNoisyLinear, scaled_noise

# Random streams of a member's seed (rlzoo.seeding uses 1-5 for exploration, replay and evaluation).
NOISE_ONLINE, NOISE_TARGET = 16, 17


def noisy_layers(module: nn.Module) -> list[PopNoisyLinear]:
    return [m for m in module.modules() if isinstance(m, PopNoisyLinear)]


class NoiseSampler:
    """Draws fresh factorised noise into every noisy layer of ``module``, member by member."""

    def __init__(self, module: nn.Module, seeds: Sequence[int], stream: int):
        self.layers = noisy_layers(module)
        self.rngs = [np.random.default_rng([int(s), int(stream)]) for s in seeds]
        population = {layer.eps_in.shape[0] for layer in self.layers}
        if population != {len(self.rngs)}:
            raise ValueError(f"the noisy layers have {sorted(population)} members but {len(self.rngs)} seeds "
                             "were given")

    def sample(self) -> None:
        for layer in self.layers:
            n_in = layer.in_features
            draws = torch.from_numpy(np.stack([rng.standard_normal(n_in + layer.out_features) for rng in self.rngs]))
            f = scaled_noise(draws)  # f(x) = sign(x) sqrt(|x|), in float64, then stored as float32
            layer.set_noise(f[:, :n_in], f[:, n_in:])

    def state_dict(self) -> dict:
        return {"rngs": [rng.bit_generator.state for rng in self.rngs]}  # fresh dicts: a copy, not a view

    def load_state_dict(self, state: dict) -> None:
        for rng, rng_state in zip(self.rngs, state["rngs"], strict=True):
            rng.bit_generator.state = rng_state


class NoisyNets:
    """The noise of an agent's two networks: ``online`` and ``target`` samplers on independent streams."""

    def __init__(self, online: nn.Module, target: nn.Module, seeds: Sequence[int]):
        self.online = NoiseSampler(online, seeds, NOISE_ONLINE)
        self.target = NoiseSampler(target, seeds, NOISE_TARGET)

    @classmethod
    def build(cls, online: nn.Module, target: nn.Module, seeds: Sequence[int] | None) -> "NoisyNets | None":
        """``None`` for networks without noisy layers."""
        if not noisy_layers(online):
            return None
        if seeds is None:
            raise ValueError("a network with noisy layers needs the members' seeds (the agent's `seeds` argument) "
                             "to draw its noise")
        return cls(online, target, seeds)

    def state_dict(self) -> dict:
        return {"online": self.online.state_dict(), "target": self.target.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.online.load_state_dict(state["online"])
        self.target.load_state_dict(state["target"])
