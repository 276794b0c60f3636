"""DQN and its variants as one agent whose parts are chosen by configuration.

- the TD target rule (``rlzoo.targets.dqn_target`` or ``double_dqn_target``) makes it Double or not;
- the Q-network's head (``QHead`` or ``DuelingHead``) makes it Dueling or not.

All tensors carry the population axis first; member ``i``'s loss depends only on member ``i``'s
parameters, so one optimizer over the stacked parameters is ``P`` independent optimizers.
"""

from __future__ import annotations

import copy
import functools
import inspect
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from rlzoo.replay import Batch
from rlzoo.targets import NUMPY_TWINS

LOSSES = {"huber": F.smooth_l1_loss, "mse": F.mse_loss}


def clip_grad_norm_per_member(grads, max_norm: float):
    """Clip each member's gradient to global norm ``max_norm``, in place. ``grads`` are the parameters'
    gradients with the member axis first, all torch tensors or all numpy arrays (the numpy learner passes
    its numpy gradients: at these sizes numpy's calls cost a fraction of torch's per-operation dispatch).

    Returns the per-member norms before clipping, shape ``[P]``, of the same kind as ``grads``.
    """
    P = grads[0].shape[0]
    if isinstance(grads[0], np.ndarray):
        flat = [g.reshape(P, -1) for g in grads]
        norms = np.sqrt(sum(np.vecdot(f, f) for f in flat))  # per row the same dot product for any P
    else:
        norms = torch.cat([g.reshape(P, -1) for g in grads], dim=1).norm(dim=1)
    coef = max_norm / (norms + 1e-6)
    coef[coef > 1.0] = 1.0
    for g in grads:
        g *= coef.reshape(P, *([1] * (g.ndim - 1)))
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
        cpu_numpy: on the CPU, act and learn with numpy (``QNetwork.np_forward``/``np_backward``) when
            the network supports it; ``False`` uses torch and autograd everywhere.
        lr_scheduler: ``optimizer -> torch.optim.lr_scheduler.LRScheduler``, stepped after every update;
            ``None``: a constant learning rate.
    """

    def __init__(self, q_net: nn.Module, optimizer: torch.optim.Optimizer, target_fn: Callable,
                 gamma: float = 0.99, loss: str = "huber", max_grad_norm: float | None = 10.0,
                 cpu_numpy: bool = True, lr_scheduler=None):
        if loss not in LOSSES:
            raise ValueError(f"loss must be one of {sorted(LOSSES)}, got {loss!r}")
        if not 0.0 <= gamma <= 1.0:
            raise ValueError(f"gamma must be in [0, 1], got {gamma}")
        self.q_net = q_net
        self.target_net = copy.deepcopy(q_net).requires_grad_(False)
        self.optimizer = optimizer
        self.lr_scheduler = lr_scheduler(optimizer) if lr_scheduler is not None else None
        self.target_fn = target_fn
        self.uses_online_next = "q_next_online" in inspect.signature(target_fn).parameters
        self.gamma = float(gamma)
        self.loss_fn = LOSSES[loss]
        self.max_grad_norm = max_grad_norm or None
        self.updates = 0
        self.device = next(q_net.parameters()).device
        self.uses_numpy = bool(cpu_numpy and getattr(q_net, "supports_numpy", False))  # acting and learning
        bare = target_fn.func if isinstance(target_fn, functools.partial) and not (
            target_fn.args or target_fn.keywords) else target_fn
        self.numpy_target_fn = NUMPY_TWINS.get(bare)

    def q_values(self, obs: np.ndarray) -> np.ndarray:
        """Q-values of one observation per member: ``[P, A]``.

        On the CPU, networks built from numpy-capable parts are evaluated with numpy on views of their
        parameters (``QNetwork.np_forward``): 5-10x less time per call than a torch forward for one
        observation, and always the current weights.
        """
        if self.uses_numpy:
            return self.q_net.np_forward(np.asarray(obs)[:, None])[:, 0]
        with torch.inference_mode():
            return self.q_net(torch.as_tensor(obs, device=self.device).unsqueeze(1))[:, 0].cpu().numpy()

    def update(self, batch: Batch) -> dict[str, torch.Tensor]:
        """One gradient step per member on its own minibatch; returns per-member metrics ``[P]``."""
        if self.uses_numpy:
            return self._update_numpy(batch)
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
            grads = [p.grad for p in self.q_net.parameters() if p.grad is not None]
            metrics["grad_norm"] = clip_grad_norm_per_member(grads, self.max_grad_norm)
        self._step()
        return metrics

    def _update_numpy(self, batch: Batch) -> dict[str, torch.Tensor]:
        """``update`` with numpy arithmetic and the networks' hand-written backward pass, on the CPU.

        The same loss, gradient, clipping and optimizer step as the autograd path (equal to float32
        rounding, tests/test_dqn_agent.py). For the small networks of vector-observation tasks it
        avoids torch's per-operation dispatch and autograd bookkeeping, which cost more than the
        arithmetic at one member; on CartPole (benchmarks/throughput.py) the whole loop ran 1.8x
        faster at one member and 1.4x at ten than with ``cpu_numpy=false``.
        """
        obs, action, reward, next_obs, terminated = (x.numpy() for x in batch)
        q, context = self.q_net.np_train_forward(obs)  # [P, B, A]
        B, A = q.shape[1:]
        taken = action[..., None] == np.arange(A)  # one-hot of the actions taken, [P, B, A]
        q_sa = (q * taken).sum(axis=-1)  # [P, B]
        q_next = self.target_net.np_forward(next_obs)
        extra = (self.q_net.np_forward(next_obs),) if self.uses_online_next else ()
        if self.numpy_target_fn is not None:
            y = self.numpy_target_fn(reward, terminated, self.gamma, q_next, *extra)
        else:  # a rule without a numpy twin: evaluate it in torch on views of the arrays
            y = self.target_fn(batch.reward, batch.terminated, self.gamma, torch.from_numpy(q_next),
                               *(torch.from_numpy(x) for x in extra)).numpy()
        diff = q_sa - y
        if self.loss_fn is F.smooth_l1_loss:  # beta = 1
            grad_q_sa = np.clip(diff, -1.0, 1.0)
            # c (d - c / 2) with c = clip(d, -1, 1): d^2 / 2 where |d| < 1, else |d| - 1/2
            member_loss = (grad_q_sa * (diff - 0.5 * grad_q_sa)).mean(axis=1)
        else:
            member_loss = (diff * diff).mean(axis=1)
            grad_q_sa = 2.0 * diff
        grad_q_sa /= B  # each member's loss is a mean over its batch; the members' losses are summed
        grad_q = taken * grad_q_sa[..., None]
        grads = self.q_net.np_backward(context, grad_q)
        metrics = {"loss": torch.from_numpy(member_loss), "q_mean": torch.from_numpy(q_sa.mean(axis=1))}
        if self.max_grad_norm:
            metrics["grad_norm"] = torch.from_numpy(clip_grad_norm_per_member([g for _, g in grads], self.max_grad_norm))
        for param, g in grads:
            param.grad = torch.from_numpy(g)
        self._step()
        return metrics

    def _step(self) -> None:
        self.optimizer.step()
        if self.lr_scheduler is not None:
            self.lr_scheduler.step()
        self.updates += 1

    @property
    def online(self) -> nn.Module:
        return self.q_net

    @property
    def target(self) -> nn.Module:
        return self.target_net

    def state_dict(self) -> dict:
        return {"q_net": self.q_net.state_dict(), "target_net": self.target_net.state_dict(),
                "optimizer": self.optimizer.state_dict(), "updates": self.updates,
                **({"lr_scheduler": self.lr_scheduler.state_dict()} if self.lr_scheduler is not None else {})}

    def load_state_dict(self, state: dict) -> None:
        self.q_net.load_state_dict(state["q_net"])
        self.target_net.load_state_dict(state["target_net"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.lr_scheduler is not None:
            self.lr_scheduler.load_state_dict(state["lr_scheduler"])
        self.updates = int(state["updates"])
