"""Population-aware Q-networks.

A network here holds the parameters of ``P`` independent members stacked on a leading axis and maps
observations ``[P, B, *obs_shape]`` to Q-values ``[P, B, A]``. Member ``i`` draws its initial weights
from its own generator (seeded with ``seed + i``), so it starts exactly where a solo run with that
seed starts. ``P = 1`` is the plain case, not a separate code path.

A Q-network is ``encoder -> torso -> head``:
- the encoder turns raw observations into floats (one-hot for discrete states, /255 for uint8 pixels);
- the torso (``MLP``; the CNNs for pixels) is chosen with the ``network`` config group;
- the head (``QHead`` or ``DuelingHead``) is chosen by the agent.
"""

from __future__ import annotations

import functools
import math
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


# Elementwise steps of the numpy passes. Above this many elements they run as torch kernels on views of
# the same memory: np.maximum (NaN-propagating) is 6x slower than torch.relu_ on a [10, 128, 120] array
# on this project's CPU, and a sum over the batch is faster as a matmul with a vector of ones.
_TORCH_FROM = 4096


def _relu_(x: np.ndarray) -> np.ndarray:
    if x.size >= _TORCH_FROM:
        torch.relu_(torch.from_numpy(x))
    else:
        np.maximum(x, 0.0, out=x)
    return x


def _relu_grad(grad: np.ndarray, out: np.ndarray) -> np.ndarray:
    """``grad * (out > 0)`` for ``out = relu(...)``; may overwrite ``grad``."""
    if grad.size >= _TORCH_FROM:
        return torch.ops.aten.threshold_backward(torch.from_numpy(grad), torch.from_numpy(out), 0.0).numpy()
    return np.multiply(grad, out > 0, out=grad)


@functools.lru_cache(maxsize=16)
def _ones(n: int, dtype) -> np.ndarray:
    ones = np.ones((1, n), dtype=dtype)
    ones.flags.writeable = False
    return ones


def member_generators(seeds: Sequence[int]) -> list[torch.Generator]:
    """One CPU generator per member, for parameter initialisation."""
    return [torch.Generator().manual_seed(int(s)) for s in seeds]


class PopLinear(nn.Module):
    """``P`` independent linear layers applied with one batched matmul.

    Initialised like ``torch.nn.Linear`` (uniform in ``+-1/sqrt(in_features)``), member by member, and
    stored in its layout, ``weight[i]`` being ``[out, in]`` (with MKL on this project's CPU, a batched
    matmul against the transposed view is 3x faster than against ``[in, out]`` storage when ``out`` is
    a handful of actions).
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

    def _np_params(self) -> tuple[np.ndarray, np.ndarray]:
        """numpy views ``(weight [P, out, in], bias [P, 1, out])`` of the (CPU) parameters."""
        # Read through self._parameters and cached in __dict__: nn.Module's attribute lookup costs as
        # much as the matmul of one observation.
        weight, bias = self._parameters["weight"], self._parameters["bias"]
        key = (weight.data_ptr(), bias.data_ptr())
        cache = self.__dict__.get("_np_views")
        if cache is None or cache[0] != key:  # first call, or the parameters were moved or replaced
            cache = (key, weight.detach().numpy(), bias.detach().numpy())
            self.__dict__["_np_views"] = cache
        return cache[1], cache[2]

    def __getstate__(self) -> dict:
        # Copies (deepcopy, pickle) never carry the cached views: they view this module's parameter memory,
        # which a storage swap (share_memory_) may already have freed; the copy builds its own on first use.
        state = self.__dict__.copy()
        state.pop("_np_views", None)
        return state

    def np_forward(self, x: np.ndarray) -> np.ndarray:
        """``forward`` in numpy on views of the (CPU) parameters: ``[P, B, in] -> [P, B, out]``."""
        weight, bias = self._np_params()
        out = np.matmul(x, weight.transpose(0, 2, 1))
        if out.size >= _TORCH_FROM:
            torch.from_numpy(out).add_(torch.from_numpy(bias))
        else:
            out += bias
        return out

    def np_backward(self, x: np.ndarray, grad_out: np.ndarray, grads: list, input_grad: bool = True):
        """Backward pass of ``np_forward`` at input ``x``: appends ``(parameter, gradient)`` for the weight
        and the bias to ``grads`` and returns the gradient with respect to ``x`` (``None`` if not asked)."""
        weight, _ = self._np_params()
        grads.append((self._parameters["weight"], np.matmul(grad_out.transpose(0, 2, 1), x)))
        ones = _ones(grad_out.shape[1], grad_out.dtype)
        grads.append((self._parameters["bias"], np.matmul(ones, grad_out)))  # the sum over the batch
        return np.matmul(grad_out, weight) if input_grad else None


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

    def np_forward(self, obs: np.ndarray) -> np.ndarray:
        if self.num_states is not None:
            return np.eye(self.num_states, dtype=np.float32)[obs.astype(np.int64, copy=False)]
        x = obs.astype(np.float32, copy=False)
        if self.scale is not None:
            x = x / np.float32(self.scale)
        if self.flatten:
            x = x.reshape(*x.shape[:2], -1)
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

    def np_forward(self, x: np.ndarray) -> np.ndarray:
        return self.np_train_forward(x)[0]

    def np_train_forward(self, x: np.ndarray):
        """``(output, context for np_backward)``."""
        context = []
        for layer in self._modules["layers"]._modules.values():  # skips nn.Module.__getattr__
            h = _relu_(layer.np_forward(x))
            context.append((x, h))
            x = h
        return x, context

    def np_backward(self, context, grad_out: np.ndarray, grads: list, input_grad: bool = True):
        g = grad_out
        for i in range(len(self.layers) - 1, -1, -1):
            x, h = context[i]
            g = _relu_grad(g, h)  # may overwrite: np_backward may overwrite grad_out
            g = self.layers[i].np_backward(x, g, grads, input_grad=input_grad or i > 0)
        return g


class QHead(nn.Module):
    """Plain linear Q head: ``Q(s, .) = W phi(s) + b``."""

    def __init__(self, in_features: int, num_actions: int, generators: Sequence[torch.Generator]):
        super().__init__()
        self.q = PopLinear(in_features, num_actions, generators)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.q.forward(features)

    def np_forward(self, features: np.ndarray) -> np.ndarray:
        return self._modules["q"].np_forward(features)

    def np_train_forward(self, features: np.ndarray):
        return self.q.np_forward(features), features

    def np_backward(self, context, grad_out: np.ndarray, grads: list, input_grad: bool = True):
        return self.q.np_backward(context, grad_out, grads, input_grad)


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

    def np_forward(self, features: np.ndarray) -> np.ndarray:
        return self.np_train_forward(features)[0]

    def np_train_forward(self, features: np.ndarray):
        v_in = a_in = features
        if self.hidden:
            v_in = _relu_(self.value_hidden.np_forward(features))
            a_in = _relu_(self.adv_hidden.np_forward(features))
        v, a = self.value.np_forward(v_in), self.advantage.np_forward(a_in)
        return v + a - a.mean(axis=-1, keepdims=True), (features, v_in, a_in)

    def np_backward(self, context, grad_out: np.ndarray, grads: list, input_grad: bool = True):
        features, v_in, a_in = context
        grad_v = grad_out.sum(axis=-1, keepdims=True)  # dQ/dV = 1 for every action
        grad_a = grad_out - grad_out.mean(axis=-1, keepdims=True)  # dQ_a/dA_b = [a == b] - 1/|A|
        grad_v_in = self.value.np_backward(v_in, grad_v, grads, input_grad or bool(self.hidden))
        grad_a_in = self.advantage.np_backward(a_in, grad_a, grads, input_grad or bool(self.hidden))
        if self.hidden:
            grad_v_in = self.value_hidden.np_backward(features, _relu_grad(grad_v_in, v_in), grads, input_grad)
            grad_a_in = self.adv_hidden.np_backward(features, _relu_grad(grad_a_in, a_in), grads, input_grad)
        return grad_v_in + grad_a_in if input_grad else None


class QNetwork(nn.Module):
    """``encoder -> torso -> head``; maps ``[P, B, *obs_shape]`` to ``[P, B, A]``."""

    def __init__(self, encoder: nn.Module, torso: nn.Module, head: nn.Module):
        super().__init__()
        self.encoder, self.torso, self.head = encoder, torso, head

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        # Calling .forward directly skips nn.Module.__call__'s hook dispatch (no hooks are used here);
        # at one observation per step that dispatch costs as much as the small matmuls themselves.
        return self.head.forward(self.torso.forward(self.encoder.forward(obs)))

    @property
    def supports_numpy(self) -> bool:
        """Whether the numpy passes are available: every part has them (the MLP torso and both heads do,
        the CNN torsos do not) and the parameters are float32 on the CPU."""
        parts = (self.encoder, self.torso, self.head)
        return (all(hasattr(m, "np_forward") for m in parts)
                and all(hasattr(m, "np_backward") for m in (self.torso, self.head))
                and all(p.device.type == "cpu" and p.dtype == torch.float32 for p in self.parameters()))

    def np_forward(self, obs: np.ndarray) -> np.ndarray:
        """``forward`` computed with numpy on views of the CPU parameters, without autograd or torch's
        per-operation dispatch: for acting, where the batch is one observation per member and that
        dispatch costs far more than the arithmetic. Same values as ``forward`` to float32 rounding."""
        parts = self._modules  # skips nn.Module.__getattr__ (a microsecond a lookup)
        return parts["head"].np_forward(parts["torso"].np_forward(parts["encoder"].np_forward(obs)))

    def np_train_forward(self, obs: np.ndarray):
        """``np_forward`` that also returns what ``np_backward`` needs (the layers' inputs and outputs)."""
        features, torso_context = self.torso.np_train_forward(self.encoder.np_forward(obs))
        q, head_context = self.head.np_train_forward(features)
        return q, (torso_context, head_context)

    def np_backward(self, context, grad_q: np.ndarray) -> list:
        """Hand-written backward pass of ``np_train_forward`` for the gradient ``grad_q`` of a loss with
        respect to its output; returns ``[(parameter, gradient)]`` for every parameter (the encoder has none).
        Equal to autograd's gradients to float32 rounding (tests/test_dqn_agent.py)."""
        torso_context, head_context = context
        grads: list = []
        grad_features = self.head.np_backward(head_context, grad_q, grads, input_grad=True)
        self.torso.np_backward(torso_context, grad_features, grads, input_grad=False)
        return grads


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
