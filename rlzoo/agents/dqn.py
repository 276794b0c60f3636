"""DQN and its variants as one agent whose parts are chosen by configuration.

- the TD target rule (``rlzoo.targets.dqn_target`` or ``double_dqn_target``) makes it Double or not;
- the Q-network's head (``QHead`` or ``DuelingHead``) makes it Dueling or not.

All tensors carry the population axis first; member ``i``'s loss depends only on member ``i``'s
parameters, so one optimizer over the stacked parameters is ``P`` independent optimizers.
"""

from __future__ import annotations

import copy
import inspect
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from rlzoo.replay import Batch

LOSSES = {"huber": F.smooth_l1_loss, "mse": F.mse_loss}


def clip_grad_norm_per_member(parameters, max_norm: float) -> torch.Tensor:
    """Clip each member's gradient to global norm ``max_norm`` (parameters have the member axis first).

    Returns the per-member norms before clipping, shape ``[P]``.
    """
    grads = [p.grad for p in parameters if p.grad is not None]
    norms = torch.cat([g.flatten(start_dim=1) for g in grads], dim=1).norm(dim=1)
    coef = (max_norm / (norms + 1e-6)).clamp(max=1.0)
    torch._foreach_mul_(grads, [coef.view(-1, *([1] * (g.dim() - 1))) for g in grads])
    return norms


class DQNAgent:
    """Q-learning with a neural network, a target network and minibatch updates.

    Args:
        q_net: population Q-network mapping ``[P, B, *obs]`` to ``[P, B, A]``.
        optimizer: optimizer over ``q_net.parameters()``.
        target_fn: ``(reward, terminated, gamma, q_next_target[, q_next_online]) -> y``; the online
            network's next-state values are computed only if the rule takes ``q_next_online``.
        gamma: discount factor.
        loss: ``"huber"`` (smooth L1, Mnih et al. 2015) or ``"mse"``.
        max_grad_norm: per-member gradient norm clip; ``None`` or ``0`` disables it.
    """

    def __init__(self, q_net: nn.Module, optimizer: torch.optim.Optimizer, target_fn: Callable,
                 gamma: float = 0.99, loss: str = "huber", max_grad_norm: float | None = 10.0):
        if loss not in LOSSES:
            raise ValueError(f"loss must be one of {sorted(LOSSES)}, got {loss!r}")
        if not 0.0 <= gamma <= 1.0:
            raise ValueError(f"gamma must be in [0, 1], got {gamma}")
        self.q_net = q_net
        self.target_net = copy.deepcopy(q_net).requires_grad_(False)
        self.optimizer = optimizer
        self.target_fn = target_fn
        self.uses_online_next = "q_next_online" in inspect.signature(target_fn).parameters
        self.gamma = float(gamma)
        self.loss_fn = LOSSES[loss]
        self.max_grad_norm = max_grad_norm or None
        self.updates = 0
        self.device = next(q_net.parameters()).device
        self.numpy_acting = bool(getattr(q_net, "supports_numpy", False))

    def q_values(self, obs: np.ndarray) -> np.ndarray:
        """Q-values of one observation per member: ``[P, A]``.

        On the CPU, networks built from numpy-capable parts are evaluated with numpy on views of their
        parameters (``QNetwork.np_forward``): 5-10x less time per call than a torch forward for one
        observation, and always the current weights.
        """
        if self.numpy_acting:
            return self.q_net.np_forward(np.asarray(obs)[:, None])[:, 0]
        with torch.inference_mode():
            return self.q_net(torch.as_tensor(obs, device=self.device).unsqueeze(1))[:, 0].cpu().numpy()

    def update(self, batch: Batch) -> dict[str, torch.Tensor]:
        """One gradient step per member on its own minibatch; returns per-member metrics ``[P]``."""
        q_sa = self.q_net(batch.obs).gather(-1, batch.action.unsqueeze(-1)).squeeze(-1)
        with torch.no_grad():
            args = [batch.reward, batch.terminated, self.gamma, self.target_net(batch.next_obs)]
            if self.uses_online_next:
                args.append(self.q_net(batch.next_obs))
            y = self.target_fn(*args)
        member_loss = self.loss_fn(q_sa, y, reduction="none").mean(dim=1)  # [P]
        self.optimizer.zero_grad(set_to_none=True)
        member_loss.sum().backward()  # sum, not mean: each member's gradient is its own
        metrics = {"loss": member_loss.detach(), "q_mean": q_sa.detach().mean(dim=1)}
        if self.max_grad_norm:
            metrics["grad_norm"] = clip_grad_norm_per_member(list(self.q_net.parameters()), self.max_grad_norm)
        self.optimizer.step()
        self.updates += 1
        return metrics

    @property
    def online(self) -> nn.Module:
        return self.q_net

    @property
    def target(self) -> nn.Module:
        return self.target_net

    def state_dict(self) -> dict:
        return {"q_net": self.q_net.state_dict(), "target_net": self.target_net.state_dict(),
                "optimizer": self.optimizer.state_dict(), "updates": self.updates}

    def load_state_dict(self, state: dict) -> None:
        self.q_net.load_state_dict(state["q_net"])
        self.target_net.load_state_dict(state["target_net"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.updates = int(state["updates"])
