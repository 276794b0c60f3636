"""DQN and its variants as one agent whose parts are chosen by configuration.

- the TD-target rule (``rlzoo.targets.dqn_target`` or ``double_dqn_target``) makes it Double or not;
- the Q-network's head (``QHead`` or ``DuelingHead``) makes it Dueling or not;
- the target-network rule (``HardSync`` or ``SoftSync``) says how the target follows the online network;
- the loss (``huber`` or ``mse``) turns predictions and targets into a per-sample loss.

All tensors carry the population axis first; member ``i``'s loss depends only on member ``i``'s
parameters, so one optimizer over the stacked parameters is ``P`` independent optimizers.
"""

from __future__ import annotations

import contextlib
import copy
import inspect
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from rlzoo.nets.noise import NoisyNets
from rlzoo.nets.numpy_backend import AdamStep, NumpyLearner
from rlzoo.replay import Batch
from rlzoo.target_sync import HardSync

LOSSES = {"huber": F.smooth_l1_loss, "mse": F.mse_loss}


def clip_grad_norm_per_member(grads: list[torch.Tensor], max_norm: float) -> torch.Tensor:
    """Scale each member's gradient (member axis first) to global norm at most ``max_norm``, in place.
    Returns the per-member norms before clipping, ``[P]``."""
    P = grads[0].shape[0]
    norms = torch.cat([g.reshape(P, -1) for g in grads], dim=1).norm(dim=1)
    coef = (max_norm / (norms + 1e-6)).clamp(max=1.0)
    for g in grads:
        g.mul_(coef.reshape(P, *([1] * (g.ndim - 1))))
    return norms


class DQNAgent:
    """Q-learning with a neural network, a target network and minibatch updates.

    Args:
        q_net: population Q-network mapping ``[P, B, *obs]`` to ``[P, B, A]``.
        optimizer: optimizer over ``q_net.parameters()``.
        target_fn: ``(reward, terminated, gamma, q_next_target[, q_next_online]) -> y``; the online
            network's next-state values are computed only if the rule takes ``q_next_online``.
        target_sync: ``(online, target, updates) -> bool``, called after every update; default: a copy
            every 128 updates.
        gamma: discount factor.
        loss: ``"huber"`` (smooth L1, Mnih et al. 2015) or ``"mse"``.
        max_grad_norm: per-member gradient norm clip; ``None`` or ``0`` disables it.
        lr_scheduler: ``optimizer -> torch.optim.lr_scheduler.LRScheduler``, stepped after every update;
            ``None``: a constant learning rate.
        fast_path: on the CPU, act and compute gradients with ``rlzoo.nets.numpy_backend`` where it covers
            the network (the same numbers to float32 rounding, faster for small MLPs); ``False``: autograd.
        seeds: the members' seeds; a network with noisy layers (``PopNoisyLinear``) draws its noise from them
            (``rlzoo.nets.noise``: fresh online and target noise before every update, fresh acting noise after
            it, the mean weights in evaluation).
    """

    def __init__(self, q_net: nn.Module, optimizer: torch.optim.Optimizer, target_fn: Callable,
                 target_sync: Callable | None = None, gamma: float = 0.99, loss: str = "huber",
                 max_grad_norm: float | None = 10.0, lr_scheduler: Callable | None = None, fast_path: bool = True,
                 seeds: Sequence[int] | None = None):
        if loss not in LOSSES:
            raise ValueError(f"loss must be one of {sorted(LOSSES)}, got {loss!r}")
        if not 0.0 <= gamma <= 1.0:
            raise ValueError(f"gamma must be in [0, 1], got {gamma}")
        self.q_net = q_net
        self.target_net = copy.deepcopy(q_net).requires_grad_(False)
        self.optimizer = optimizer
        self.lr_scheduler = lr_scheduler(optimizer) if lr_scheduler is not None else None
        self.target_fn = target_fn
        self.target_sync = target_sync if target_sync is not None else HardSync(every=128)
        self.uses_online_next = "q_next_online" in inspect.signature(target_fn).parameters
        self.gamma = float(gamma)
        self.loss_fn = LOSSES[loss]
        self.max_grad_norm = max_grad_norm or None
        self.updates = 0
        self.env_step = 0  # the environment step of the latest update (for a target rule counted in steps)
        self.device = next(q_net.parameters()).device
        self.fast = (NumpyLearner.build(q_net, self.target_net, target_fn, self.uses_online_next, loss)
                     if fast_path else None)
        self.optimizer_step = AdamStep(optimizer) if self.fast is not None else optimizer.step
        self.noise = NoisyNets.build(q_net, self.target_net, seeds)  # None without noisy layers
        self.self_exploring = self.noise is not None  # noisy nets explore by their noise: the loop's epsilon is 0
        if self.noise is not None:
            self.noise.online.sample()  # the acting noise until the first update

    def q_values(self, obs: np.ndarray) -> np.ndarray:
        """Q-values of one observation per member: ``[P, A]``."""
        if self.fast is not None and self.fast.online.first_view_valid():
            return self.fast.q_values(obs)
        with torch.inference_mode():
            return self.q_net(torch.as_tensor(obs, device=self.device).unsqueeze(1))[:, 0].cpu().numpy()

    @contextlib.contextmanager
    def evaluating(self):
        """Inside it, ``q_values`` uses the online network in ``eval()`` mode: noisy layers act with their mean
        weights, so a greedy evaluation is deterministic (the loop evaluates inside it)."""
        training = self.q_net.training
        self.q_net.eval()
        try:
            yield self
        finally:
            self.q_net.train(training)

    def td_target(self, batch: Batch) -> torch.Tensor:
        """``y [P, B]`` from the target network (and the online network if the rule takes it)."""
        with torch.no_grad():
            gamma = self.gamma if batch.discount is None else batch.discount  # n-step: gamma**k per sample
            args = [batch.reward, batch.terminated, gamma, self.target_net(batch.next_obs)]
            if self.uses_online_next:
                args.append(self.q_net(batch.next_obs))
            return self.target_fn(*args)

    def _gradients(self, batch: Batch):
        """Autograd: sets the parameters' ``.grad``; returns ``(loss [P], q_mean [P], grad_norm, td_error [P, B])``."""
        q_sa = self.q_net(batch.obs).gather(-1, batch.action.unsqueeze(-1)).squeeze(-1)
        y = self.td_target(batch)
        member_loss, norms = self._backward(self.loss_fn(q_sa, y, reduction="none"), batch.weights)
        q_sa = q_sa.detach()
        return member_loss, q_sa.mean(dim=1), norms, y - q_sa

    def _backward(self, per_sample: torch.Tensor, weights: torch.Tensor | None):
        """Weight the per-sample losses ``[P, B]`` (importance weights of a prioritized sampler), average them
        per member, set the gradients and clip them per member. Returns ``(member_loss [P], norms or None)``."""
        if weights is not None:
            per_sample = per_sample * weights
        member_loss = per_sample.mean(dim=1)  # [P]
        self.optimizer.zero_grad(set_to_none=True)
        member_loss.sum().backward()  # sum, not mean: each member's gradient is its own
        norms = None
        if self.max_grad_norm:
            grads = [p.grad for p in self.q_net.parameters() if p.grad is not None]
            norms = clip_grad_norm_per_member(grads, self.max_grad_norm)
        return member_loss.detach(), norms

    def learn(self, batch: Batch, step: int | None = None) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """One gradient step per member on its own minibatch, then the target rule; returns per-member
        metrics ``[P]`` and the TD errors ``[P, B]``. ``step``: the environment step of this update, for a
        target rule counted in environment steps."""
        if step is not None:
            before = getattr(self.target_sync, "before_update", None)
            if before is not None:
                before(self.q_net, self.target_net, self.env_step, step)
            self.env_step = int(step)
        if self.noise is not None:  # Fortunato et al. 2018: fresh, independent noise for both networks
            self.noise.online.sample()
            self.noise.target.sample()
        if self.fast is not None and self.fast.valid():
            loss, q_mean, norms, td_error = self.fast.gradients(batch, self.gamma, self.max_grad_norm)
        else:
            loss, q_mean, norms, td_error = self._gradients(batch)
        self.optimizer_step()
        if self.noise is not None:
            self.noise.online.sample()  # acting uses this noise until the next update
        if self.lr_scheduler is not None:
            self.lr_scheduler.step()
        self.updates += 1
        self.target_sync(self.q_net, self.target_net, self.updates)
        metrics = {"loss": loss, "q_mean": q_mean}
        if norms is not None:
            metrics["grad_norm"] = norms
        return metrics, td_error

    def state_dict(self) -> dict:
        state = {"q_net": self.q_net.state_dict(), "target_net": self.target_net.state_dict(),
                 "optimizer": self.optimizer.state_dict(), "updates": self.updates,
                 "env_step": self.env_step}
        if self.lr_scheduler is not None:
            state["lr_scheduler"] = self.lr_scheduler.state_dict()
        if self.noise is not None:
            state["noise"] = self.noise.state_dict()
        return state

    def load_state_dict(self, state: dict) -> None:
        self.q_net.load_state_dict(state["q_net"])
        self.target_net.load_state_dict(state["target_net"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.lr_scheduler is not None:
            self.lr_scheduler.load_state_dict(state["lr_scheduler"])
        self.updates = int(state["updates"])
        self.env_step = int(state.get("env_step", 0))
        if self.noise is not None:
            self.noise.load_state_dict(state["noise"])
