"""A lean Adam for the small, frequent updates of value-based RL.

``torch.optim.Adam(fused=True)`` spends about 150 us per step on this project's CPU in Python
bookkeeping around a kernel that itself takes 15 us for a CartPole MLP; at one update every few
environment steps that bookkeeping is a visible share of a run. This optimizer keeps the parameter,
gradient and state lists ready and makes one fused call per step (a ``torch._foreach_*`` sequence
where no fused kernel exists). Same algorithm and hyper-parameters as ``torch.optim.Adam`` without
weight decay or AMSGrad (Kingma and Ba 2015, with ``eps`` added outside the square root); its state
dict has the same layout (``step``, ``exp_avg``, ``exp_avg_sq`` per parameter).
"""

from __future__ import annotations

import math

import torch

_FUSED_DEVICES = ("cpu", "cuda")


class Adam(torch.optim.Optimizer):
    def __init__(self, params, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8):
        if not lr > 0.0:
            raise ValueError(f"lr must be > 0, got {lr}")
        if not (0.0 <= betas[0] < 1.0 and 0.0 <= betas[1] < 1.0):
            raise ValueError(f"Adam betas must be in [0, 1), got {tuple(betas)}")
        if not eps >= 0.0:
            raise ValueError(f"Adam eps must be >= 0, got {eps}")
        super().__init__(params, dict(lr=float(lr), betas=tuple(float(b) for b in betas), eps=float(eps)))
        self._lists = None

    def _prepare(self):
        """Per group: (params, exp_avgs, exp_avg_sqs, steps), creating the state on first use. Parameters
        of a group whose step counts agree share one step tensor, so a step increments it once."""
        lists = []
        for group in self.param_groups:
            params = list(group["params"])
            for p in params:
                state = self.state[p]
                if not state:
                    state["step"] = torch.zeros((), dtype=torch.float32, device=p.device)
                    state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            states = [self.state[p] for p in params]
            shared = None
            if len({float(s["step"]) for s in states}) == 1 and len({p.device for p in params}) == 1:
                shared = states[0]["step"]
                for s in states:
                    s["step"] = shared
            fused = hasattr(torch, "_fused_adam_") and all(p.device.type in _FUSED_DEVICES for p in params) \
                and len({p.device for p in params}) == 1
            lists.append([group, params, [s["exp_avg"] for s in states], [s["exp_avg_sq"] for s in states],
                          [s["step"] for s in states], shared, fused])
        return lists

    def load_state_dict(self, state_dict: dict) -> None:
        super().load_state_dict(state_dict)
        self._lists = None  # the state tensors were replaced

    def add_param_group(self, param_group: dict) -> None:
        super().add_param_group(param_group)
        self._lists = None

    def zero_grad(self, set_to_none: bool = True) -> None:
        for group in self.param_groups:
            for p in group["params"]:
                if set_to_none:
                    p.grad = None
                elif p.grad is not None:
                    p.grad.zero_()

    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        if self._lists is None:
            self._lists = self._prepare()
        with torch.no_grad():
            for entry in self._lists:
                group, params, exp_avgs, exp_avg_sqs, steps, shared, fused = entry
                grads = [p.grad for p in params]
                if shared is not None and all(g is not None for g in grads):
                    shared += 1.0  # every parameter's step count
                else:
                    if shared is not None:  # some parameters have no gradient: their counts part ways
                        steps = [t.clone() for t in steps]
                        for p, t in zip(params, steps):
                            self.state[p]["step"] = t
                        entry[4], entry[5] = steps, None
                    keep = [i for i, g in enumerate(grads) if g is not None]
                    if not keep:
                        continue
                    pick = lambda xs: [xs[i] for i in keep]  # noqa: E731
                    params, grads, exp_avgs, exp_avg_sqs, steps = (pick(params), pick(grads), pick(exp_avgs),
                                                                   pick(exp_avg_sqs), pick(steps))
                    torch._foreach_add_(steps, 1.0)
                lr, (beta1, beta2), eps = group["lr"], group["betas"], group["eps"]
                if fused:
                    torch._fused_adam_(params, grads, exp_avgs, exp_avg_sqs, [], steps, amsgrad=False, lr=lr,
                                       beta1=beta1, beta2=beta2, weight_decay=0.0, eps=eps, maximize=False)
                else:
                    _foreach_adam(params, grads, exp_avgs, exp_avg_sqs, steps, lr, beta1, beta2, eps)
        return loss

    # torch.optim.Optimizer wraps a subclass's step() in a profiler label and hook dispatch (tens of
    # microseconds per call) unless the method is marked as already wrapped; step hooks are not used here.
    step.hooked = True


def _foreach_adam(params, grads, exp_avgs, exp_avg_sqs, steps, lr, beta1, beta2, eps):
    """The Adam update with ``torch._foreach_*`` operations (devices without the fused kernel)."""
    torch._foreach_lerp_(exp_avgs, grads, 1.0 - beta1)
    torch._foreach_mul_(exp_avg_sqs, beta2)
    torch._foreach_addcmul_(exp_avg_sqs, grads, grads, 1.0 - beta2)
    for p, m, v, t in zip(params, exp_avgs, exp_avg_sqs, steps):
        n = float(t)
        step_size = lr / (1.0 - beta1 ** n)
        denom = (v.sqrt() / math.sqrt(1.0 - beta2 ** n)).add_(eps)
        p.addcdiv_(m, denom, value=-step_size)
