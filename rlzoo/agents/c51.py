"""C51 (Bellemare et al. 2017): DQN that learns the distribution of the return on a fixed support of atoms.

The agent is ``DQNAgent`` with three parts swapped for their distributional forms:

- the head (``rlzoo.nets.CategoricalHead`` or ``DuelingCategoricalHead``, Rainbow's dueling form) gives
  logits ``[P, B, A, N]`` over the atoms ``z`` (its ``support``); acting uses ``Q(s, a) = sum_i z_i p_i(s, a)``;
- the target rule (``rlzoo.targets.categorical_dqn_target``, or ``double_categorical_target`` where the online
  network chooses ``a'``) gives the projected target distribution ``m [P, B, N]``;
- the loss is the cross-entropy ``-sum_i m_i log p_i(s, a)`` (Bellemare et al.'s KL loss up to a term
  without gradient).

Everything else (optimizer, gradient clipping per member, target-network rule, learning-rate schedule,
noisy layers, checkpoints) is the DQN agent's. Distributional heads have no numpy fast path: C51 runs on
autograd.
"""

from __future__ import annotations

import inspect
from typing import Callable, Sequence

import numpy as np
import torch
from torch import nn

from rlzoo.agents.dqn import DQNAgent
from rlzoo.nets.heads import expected_value
from rlzoo.replay import Batch


class C51Agent(DQNAgent):
    """Categorical DQN. Args as ``DQNAgent``'s, without ``loss`` (always the cross-entropy);
    ``target_fn``: ``(reward, terminated, gamma, p_next_target, support[, p_next_online]) -> m [P, B, N]``,
    with next-state probabilities ``[P, B, A, N]``; the online network's are computed only if the rule takes
    ``p_next_online``.

    ``learn`` returns as TD errors the per-sample KL divergence ``KL(m || p(s, a))``, the quantity Rainbow
    (Hessel et al. 2018) gives prioritized replay; ``q_mean`` is the mean expected ``Q(s, a)``.
    """

    def __init__(self, q_net: nn.Module, optimizer: torch.optim.Optimizer, target_fn: Callable,
                 target_sync: Callable | None = None, gamma: float = 0.99, max_grad_norm: float | None = 10.0,
                 lr_scheduler: Callable | None = None, fast_path: bool = True, seeds: Sequence[int] | None = None):
        head = getattr(q_net, "head", None)
        if not isinstance(getattr(head, "support", None), torch.Tensor):
            raise ValueError(f"agent=c51 needs a distributional head (rlzoo.nets.CategoricalHead or "
                             f"rlzoo.nets.DuelingCategoricalHead as agent.head), got {type(head).__name__}")
        params = inspect.signature(target_fn).parameters
        if "p_next_target" not in params:
            name = getattr(getattr(target_fn, "func", target_fn), "__name__", target_fn)
            raise ValueError(f"agent=c51 needs a distributional target rule (agent.target_fn: "
                             f"rlzoo.targets.categorical_dqn_target or double_categorical_target), got {name}")
        super().__init__(q_net, optimizer, target_fn, target_sync, gamma, max_grad_norm=max_grad_norm,
                         lr_scheduler=lr_scheduler, fast_path=fast_path, seeds=seeds)
        self.uses_online_next = "p_next_online" in params
        self.loss_fn = None  # the cross-entropy of _gradients

    @property
    def support(self) -> torch.Tensor:
        return self.q_net.head.support

    def q_values(self, obs: np.ndarray) -> np.ndarray:
        """Expected returns of one observation per member: ``[P, A]``."""
        with torch.inference_mode():
            logits = self.q_net(torch.as_tensor(obs, device=self.device).unsqueeze(1))[:, 0]  # [P, A, N]
            return expected_value(logits.softmax(dim=-1), self.support).cpu().numpy()

    def td_target(self, batch: Batch) -> torch.Tensor:
        """The projected target distribution ``m [P, B, N]``."""
        gamma = self.gamma if batch.discount is None else batch.discount  # n-step: gamma**k per sample
        with torch.no_grad():
            args = [batch.reward, batch.terminated, gamma, self.target_net(batch.next_obs).softmax(dim=-1),
                    self.support]
            if self.uses_online_next:
                args.append(self.q_net(batch.next_obs).softmax(dim=-1))
            return self.target_fn(*args)

    def _gradients(self, batch: Batch):
        """Sets the parameters' ``.grad``; returns ``(loss [P], q_mean [P], grad_norm, kl [P, B])``."""
        logits = self.q_net(batch.obs)  # [P, B, A, N]
        index = batch.action[..., None, None].expand(*batch.action.shape, 1, logits.shape[-1])
        log_p = logits.gather(-2, index).squeeze(-2).log_softmax(dim=-1)  # log p(s, a) [P, B, N]
        m = self.td_target(batch)
        per_sample = -(m * log_p).sum(dim=-1)  # cross-entropy [P, B]
        member_loss, norms = self._backward(per_sample, batch.weights)
        with torch.no_grad():
            kl = per_sample + torch.special.xlogy(m, m).sum(dim=-1)  # cross-entropy minus the entropy of m
            q_sa = expected_value(log_p.exp(), self.support)
        return member_loss, q_sa.mean(dim=1), norms, kl
