"""Rainbow (Hessel et al. 2018) as a composition of rlzoo's parts, with each part switchable by one override.

``agent=rainbow`` (conf/agent/rainbow.yaml) selects six components; the paper's ablation removes one at a time:

==================  =========================================  ===================================
component           where it lives                             "minus" override
==================  =========================================  ===================================
Double Q-learning   the target rule (``rlzoo.targets``)         ``agent.double=false``
dueling network     the head (``rlzoo.nets.heads``)             ``agent.dueling=false``
distributional C51  head, target rule and loss (``C51Agent``)   ``agent.distributional=false``
noisy nets          the head's layers (``PopNoisyLinear``)      ``agent/exploration=epsilon``
multi-step returns  the replay storage (``n_step``)             ``n_step=1``
prioritized replay  the replay sampler                          ``replay/sampler=uniform``
==================  =========================================  ===================================

The three agent switches are read in three places: ``make_head`` builds the head, ``target_rule`` picks the
target rule (the config interpolates both from ``agent.double``/``dueling``/``distributional``), and
:func:`rainbow_agent` builds the agent class that the head needs and checks that the parts agree.
"""

from __future__ import annotations

import inspect
from typing import Callable, Sequence

import torch
from torch import nn

from rlzoo.agents.c51 import C51Agent
from rlzoo.agents.dqn import DQNAgent
from rlzoo.nets.heads import DuelingCategoricalHead, DuelingHead


def rainbow_agent(q_net: nn.Module, optimizer: torch.optim.Optimizer, target_fn: Callable,
                  target_sync: Callable | None = None, gamma: float = 0.99, loss: str = "huber",
                  max_grad_norm: float | None = 10.0, lr_scheduler: Callable | None = None, fast_path: bool = True,
                  seeds: Sequence[int] | None = None, double: bool = True, dueling: bool = True,
                  distributional: bool = True) -> DQNAgent:
    """``C51Agent`` when ``distributional`` (its cross-entropy loss; ``loss`` does not apply), else ``DQNAgent``.
    Refuses a head or target rule that does not match the switches (one line naming the key)."""
    head = getattr(q_net, "head", None)
    has_support = isinstance(getattr(head, "support", None), torch.Tensor)
    if has_support != bool(distributional):
        raise ValueError(f"agent.distributional={bool(distributional)} but the head is {type(head).__name__}: "
                         f"leave agent.head._target_ as rlzoo.nets.heads.make_head")
    if isinstance(head, (DuelingHead, DuelingCategoricalHead)) != bool(dueling):
        raise ValueError(f"agent.dueling={bool(dueling)} but the head is {type(head).__name__}: "
                         f"leave agent.head._target_ as rlzoo.nets.heads.make_head")
    params = inspect.signature(target_fn).parameters
    if ("q_next_online" in params or "p_next_online" in params) != bool(double):
        name = getattr(getattr(target_fn, "func", target_fn), "__name__", target_fn)
        raise ValueError(f"agent.double={bool(double)} but the target rule is {name}: "
                         f"leave agent.target_fn._target_ as rlzoo.targets.target_rule")
    common = dict(target_sync=target_sync, gamma=gamma, max_grad_norm=max_grad_norm, lr_scheduler=lr_scheduler,
                  fast_path=fast_path, seeds=seeds)
    if distributional:
        return C51Agent(q_net, optimizer, target_fn, **common)
    return DQNAgent(q_net, optimizer, target_fn, loss=loss, **common)
