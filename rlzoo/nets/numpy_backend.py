"""Optional CPU fast path for small Q-networks: numpy forward passes and a hand-written backward pass.

On the CPU, for the small MLPs of vector-observation tasks, torch's per-operation dispatch and autograd
bookkeeping cost more than the arithmetic: acting on one observation per member takes 20-40 us in numpy
against 70-100 us in torch, and a learner step about half the time (docs/performance.md). This module
compiles a ``QNetwork`` built from parts it knows (``ObservationEncoder``, ``MLP``, ``QHead``,
``DuelingHead``, each made of ``PopLinear`` layers) into numpy functions over views of the same parameter
memory, so the numbers are always the live weights and the optimizer still steps torch parameters.

``NumpyLearner.build`` returns ``None`` for anything it does not cover (a CNN torso, a new head such as C51's
``CategoricalHead``, a head of noisy layers, a TD rule
or loss without a twin here, a GPU, float64 parameters); the agent then uses autograd. Nothing outside
this module needs to know it exists, and a new network part is correct without it. tests/test_numpy_backend.py
checks it against autograd.
"""

from __future__ import annotations

import functools

import numpy as np
import torch
from torch import nn
from torch.optim.adam import adam

from rlzoo import targets
from rlzoo.nets.heads import DuelingHead, QHead
from rlzoo.nets.layers import PopLinear
from rlzoo.nets.torsos import MLP, ObservationEncoder

# Elementwise steps above this many elements run as torch kernels on views of the same memory: np.maximum
# (NaN-propagating) is 6x slower than torch.relu_ on a [10, 128, 120] array on this project's CPU.
TORCH_FROM = 4096


def _relu_(x: np.ndarray) -> np.ndarray:
    if x.size >= TORCH_FROM:
        torch.relu_(torch.from_numpy(x))
    else:
        np.maximum(x, 0.0, out=x)
    return x


def _relu_grad(grad: np.ndarray, out: np.ndarray) -> np.ndarray:
    """``grad * (out > 0)`` for ``out = relu(...)``; may overwrite ``grad``."""
    if grad.size >= TORCH_FROM:  # ReLU's own backward kernel: one pass (a mask and a fill take two)
        return torch.ops.aten.threshold_backward(torch.from_numpy(grad), torch.from_numpy(out), 0.0).numpy()
    return np.multiply(grad, out > 0, out=grad)


@functools.lru_cache(maxsize=16)
def _ones(n: int, dtype) -> np.ndarray:
    ones = np.ones((1, n), dtype=dtype)
    ones.flags.writeable = False
    return ones


class _Linear:
    """A ``PopLinear`` on numpy views of its parameters (``weight [P, out, in]``, ``bias [P, 1, out]``)."""

    def __init__(self, layer: PopLinear):
        self.weight_param, self.bias_param = layer.weight, layer.bias
        self.weight, self.bias = layer.weight.detach().numpy(), layer.bias.detach().numpy()

    def forward(self, x: np.ndarray) -> np.ndarray:
        out = np.matmul(x, self.weight.transpose(0, 2, 1))
        if out.size >= TORCH_FROM:
            torch.from_numpy(out).add_(torch.from_numpy(self.bias))
        else:
            out += self.bias
        return out

    def backward(self, x: np.ndarray, grad_out: np.ndarray, grads: list, input_grad: bool = True):
        """Appends ``(parameter, gradient)`` for weight and bias; returns the gradient for ``x`` if asked."""
        grads.append((self.weight_param, np.matmul(grad_out.transpose(0, 2, 1), x)))
        grads.append((self.bias_param, np.matmul(_ones(grad_out.shape[1], grad_out.dtype), grad_out)))
        return np.matmul(grad_out, self.weight) if input_grad else None


class _Encoder:
    def __init__(self, enc: ObservationEncoder):
        self.num_states, self.scale, self.flatten = enc.num_states, enc.scale, enc.flatten

    def forward(self, obs: np.ndarray) -> np.ndarray:
        if self.num_states is not None:
            return np.eye(self.num_states, dtype=np.float32)[obs.astype(np.int64, copy=False)]
        x = obs.astype(np.float32, copy=False)
        if self.scale is not None:
            x = x / np.float32(self.scale)
        if self.flatten:
            x = x.reshape(*x.shape[:2], -1)
        return x


class _MLP:
    def __init__(self, mlp: MLP):
        self.layers = [_Linear(layer) for layer in mlp.layers]

    def train_forward(self, x: np.ndarray):
        context = []
        for layer in self.layers:
            h = _relu_(layer.forward(x))
            context.append((x, h))
            x = h
        return x, context

    def backward(self, context, grad_out: np.ndarray, grads: list, input_grad: bool):
        g = grad_out
        for i in range(len(self.layers) - 1, -1, -1):
            x, h = context[i]
            g = self.layers[i].backward(x, _relu_grad(g, h), grads, input_grad=input_grad or i > 0)
        return g


class _QHead:
    def __init__(self, head: QHead):
        self.q = _Linear(head.q)

    def train_forward(self, features: np.ndarray):
        return self.q.forward(features), features

    def backward(self, context, grad_out: np.ndarray, grads: list, input_grad: bool):
        return self.q.backward(context, grad_out, grads, input_grad)


class _DuelingHead:
    def __init__(self, head: DuelingHead):
        self.hidden = bool(head.hidden)
        if self.hidden:
            self.value_hidden, self.adv_hidden = _Linear(head.value_hidden), _Linear(head.adv_hidden)
        self.value, self.advantage = _Linear(head.value), _Linear(head.advantage)

    def train_forward(self, features: np.ndarray):
        v_in = a_in = features
        if self.hidden:
            v_in = _relu_(self.value_hidden.forward(features))
            a_in = _relu_(self.adv_hidden.forward(features))
        v, a = self.value.forward(v_in), self.advantage.forward(a_in)
        return v + a - a.mean(axis=-1, keepdims=True), (features, v_in, a_in)

    def backward(self, context, grad_out: np.ndarray, grads: list, input_grad: bool):
        features, v_in, a_in = context
        grad_v = grad_out.sum(axis=-1, keepdims=True)  # dQ_a/dV = 1 for every action
        grad_a = grad_out - grad_out.mean(axis=-1, keepdims=True)  # dQ_a/dA_b = [a == b] - 1/|A|
        grad_v_in = self.value.backward(v_in, grad_v, grads, input_grad or self.hidden)
        grad_a_in = self.advantage.backward(a_in, grad_a, grads, input_grad or self.hidden)
        if self.hidden:
            grad_v_in = self.value_hidden.backward(features, _relu_grad(grad_v_in, v_in), grads, input_grad)
            grad_a_in = self.adv_hidden.backward(features, _relu_grad(grad_a_in, a_in), grads, input_grad)
        return grad_v_in + grad_a_in if input_grad else None


# The parts this backend knows, by exact type: a subclass may compute something else.
_ENCODERS, _TORSOS, _HEADS = {ObservationEncoder: _Encoder}, {MLP: _MLP}, {QHead: _QHead, DuelingHead: _DuelingHead}


class NumpyNet:
    """A ``QNetwork`` (``encoder``, ``torso``, ``head``) as numpy functions over views of its parameters."""

    def __init__(self, net: nn.Module):
        self.params = list(net.parameters())
        self._ptrs = [p.data_ptr() for p in self.params]
        self.encoder = _ENCODERS[type(net.encoder)](net.encoder)
        self.torso = _TORSOS[type(net.torso)](net.torso)
        self.head = _HEADS[type(net.head)](net.head)

    @staticmethod
    def covers(net: nn.Module) -> bool:
        parts = [getattr(net, name, None) for name in ("encoder", "torso", "head")]
        return (all(type(m) in table for m, table in zip(parts, (_ENCODERS, _TORSOS, _HEADS)))
                # a known torso or head made of other layers (e.g. noisy ones, PopNoisyLinear) is not covered
                and all(type(m) in (PopLinear, nn.ModuleList)
                        for part in parts[1:] for m in list(part.modules())[1:])
                and all(p.device.type == "cpu" and p.dtype == torch.float32 for p in net.parameters()))

    def views_valid(self) -> bool:
        """Whether the views still show the parameters (``.to()`` or ``share_memory_`` would replace them)."""
        return all(p.data_ptr() == ptr for p, ptr in zip(self.params, self._ptrs))

    def first_view_valid(self) -> bool:
        """``views_valid`` for the first parameter only, for the per-step acting call: whatever replaces
        parameter storage (a device move, ``share_memory_``) replaces all of it."""
        return self.params[0].data_ptr() == self._ptrs[0]

    def forward(self, obs: np.ndarray) -> np.ndarray:
        return self.train_forward(obs)[0]

    def train_forward(self, obs: np.ndarray):
        features, torso_context = self.torso.train_forward(self.encoder.forward(obs))
        q, head_context = self.head.train_forward(features)
        return q, (torso_context, head_context)

    def backward(self, context, grad_q: np.ndarray) -> list:
        """``[(parameter, gradient)]`` for every parameter, for the gradient ``grad_q`` of a loss with
        respect to the output of ``train_forward`` (the encoder has no parameters)."""
        torso_context, head_context = context
        grads: list = []
        grad_features = self.head.backward(head_context, grad_q, grads, input_grad=True)
        self.torso.backward(torso_context, grad_features, grads, input_grad=False)
        return grads


# numpy twins of rlzoo.targets' rules: the same arithmetic without torch's per-operation dispatch.
def td_target(reward, terminated, gamma, next_value):
    return reward + gamma * (1.0 - terminated) * next_value


def dqn_target(reward, terminated, gamma, q_next_target):
    return td_target(reward, terminated, gamma, q_next_target.max(axis=-1))


def double_dqn_target(reward, terminated, gamma, q_next_target, q_next_online):
    best = q_next_online.argmax(axis=-1)[..., None]
    return td_target(reward, terminated, gamma, np.take_along_axis(q_next_target, best, axis=-1)[..., 0])


TARGET_TWINS = {targets.dqn_target: dqn_target, targets.double_dqn_target: double_dqn_target}
LOSSES = ("huber", "mse")


def clip_grad_norm_per_member(grads: list[np.ndarray], max_norm: float) -> np.ndarray:
    """Scale each member's gradient to global norm at most ``max_norm``, in place; returns the norms [P]
    before clipping (``np.vecdot`` rounds a row the same for any number of rows)."""
    P = grads[0].shape[0]
    norms = np.sqrt(sum(np.vecdot(f, f) for f in (g.reshape(P, -1) for g in grads)))
    coef = np.minimum(max_norm / (norms + 1e-6), 1.0)
    for g in grads:
        g *= coef.reshape(P, *([1] * (g.ndim - 1)))
    return norms


class NumpyLearner:
    """The DQN agent's acting and gradient computation in numpy, for networks ``NumpyNet`` covers.

    ``gradients`` computes the same loss, gradients and per-member clipping as the agent's autograd path
    and leaves the gradients in the parameters' ``.grad``; the agent then steps its optimizer.
    """

    def __init__(self, online: nn.Module, target: nn.Module, target_fn, uses_online_next: bool, loss: str):
        self.online, self.target = NumpyNet(online), NumpyNet(target)
        self.target_fn, self.uses_online_next, self.huber = target_fn, uses_online_next, loss == "huber"
        bare = target_fn.func if isinstance(target_fn, functools.partial) and not (
            target_fn.args or target_fn.keywords) else target_fn
        self.twin = TARGET_TWINS.get(bare)  # None: evaluate the torch rule on views of the arrays

    @classmethod
    def build(cls, online: nn.Module, target: nn.Module, target_fn, uses_online_next: bool, loss: str):
        """A learner for these networks, or ``None`` where this backend does not apply."""
        if loss not in LOSSES or not (NumpyNet.covers(online) and NumpyNet.covers(target)):
            return None
        return cls(online, target, target_fn, uses_online_next, loss)

    def valid(self) -> bool:
        return self.online.views_valid() and self.target.views_valid()

    def q_values(self, obs: np.ndarray) -> np.ndarray:
        return self.online.forward(np.asarray(obs)[:, None])[:, 0]

    def gradients(self, batch, gamma: float, max_grad_norm: float | None):
        """Sets each parameter's ``.grad``; returns ``(loss [P], q_mean [P], grad_norm [P] or None,
        td_error [P, B])`` as torch tensors."""
        obs, reward, next_obs, terminated = (x.numpy() for x in (batch.obs, batch.reward, batch.next_obs,
                                                                 batch.terminated))
        q, context = self.online.train_forward(obs)  # [P, B, A]
        B, A = q.shape[1:]
        taken = batch.action.numpy()[..., None] == np.arange(A)  # one-hot of the actions taken
        q_sa = (q * taken).sum(axis=-1)  # [P, B]
        q_next = self.target.forward(next_obs)
        extra = (self.online.forward(next_obs),) if self.uses_online_next else ()
        if self.twin is not None:
            discount = gamma if batch.discount is None else batch.discount.numpy()  # n-step: gamma**k per sample
            y = self.twin(reward, terminated, discount, q_next, *extra)
        else:
            discount = gamma if batch.discount is None else batch.discount
            y = self.target_fn(batch.reward, batch.terminated, discount, torch.from_numpy(q_next),
                               *(torch.from_numpy(x) for x in extra)).numpy()
        diff = q_sa - y
        if self.huber:  # smooth L1 with beta 1: c (d - c / 2) with c = clip(d, -1, 1)
            grad = np.clip(diff, -1.0, 1.0)
            per_sample = grad * (diff - 0.5 * grad)
        else:
            per_sample, grad = diff * diff, 2.0 * diff
        if batch.weights is not None:  # importance weights of a prioritized sampler
            w = batch.weights.numpy()
            per_sample, grad = per_sample * w, grad * w
        member_loss = per_sample.mean(axis=1)
        grad /= B  # each member's loss is a mean over its batch; the members' losses are summed
        grads = self.online.backward(context, taken * grad[..., None])
        norms = clip_grad_norm_per_member([g for _, g in grads], max_grad_norm) if max_grad_norm else None
        for param, g in grads:
            param.grad = torch.from_numpy(g)
        return (torch.from_numpy(member_loss), torch.from_numpy(q_sa.mean(axis=1)),
                None if norms is None else torch.from_numpy(norms), torch.from_numpy(-diff))


class AdamStep:
    """``optimizer.step()``, for a plain ``torch.optim.Adam`` through its public functional form
    ``torch.optim.adam.adam`` with the parameter and state lists kept ready: the same call Adam.step makes
    (fused kernel, same arithmetic, same state), without ``Optimizer.step``'s per-call bookkeeping, which
    costs about as much as the kernel itself for a CartPole MLP (docs/performance.md). Any other optimizer,
    or Adam with options this does not pass on, steps through ``optimizer.step()``."""

    def __init__(self, optimizer: torch.optim.Optimizer):
        self.optimizer = optimizer
        groups = optimizer.param_groups
        g = groups[0]
        self.plain = (type(optimizer) is torch.optim.Adam and len(groups) == 1 and bool(g["fused"])
                      and not (g["amsgrad"] or g["weight_decay"] or g["maximize"] or g["capturable"]
                               or g["differentiable"] or g.get("decoupled_weight_decay", False)))
        self.lists = None

    def __call__(self) -> None:
        opt = self.optimizer
        if not self.plain:
            opt.step()
            return
        group = opt.param_groups[0]
        params = group["params"]
        first = opt.state.get(params[0])
        if self.lists is None or not first or first["exp_avg"] is not self.lists[0][0]:
            opt.step()  # creates the state (first step) or follows a loaded one; this step counts
            states = [opt.state[p] for p in params]
            self.lists = ([s["exp_avg"] for s in states], [s["exp_avg_sq"] for s in states],
                          [s["step"] for s in states])
            return
        exp_avgs, exp_avg_sqs, steps = self.lists
        beta1, beta2 = group["betas"]
        with torch.no_grad():
            adam(params, [p.grad for p in params], exp_avgs, exp_avg_sqs, [], steps, foreach=group["foreach"],
                 fused=True, amsgrad=False, beta1=beta1, beta2=beta2, lr=group["lr"], weight_decay=0.0,
                 eps=group["eps"], maximize=False)
