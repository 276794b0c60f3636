"""Run-time guards: stop a run that has gone numerically wrong instead of logging nonsense for hours."""

from __future__ import annotations

import math
from typing import Sequence

import torch

from rlzoo.errors import ConfigError


class NonFiniteError(ConfigError):
    """A loss or Q-value became NaN or infinite."""


def check_finite(metrics: dict[str, torch.Tensor], step: int, seeds: Sequence[int]) -> None:
    """Raise ``NonFiniteError`` naming the step and member if a member's loss or mean Q is NaN or infinite."""
    loss, q = metrics["loss"], metrics["q_mean"]
    if math.isfinite(float((loss + q).sum())):  # one reduction: NaN and inf propagate into the sum
        return
    for name, values in (("loss", loss), ("Q-value", q)):
        bad = (~torch.isfinite(values)).nonzero().flatten().tolist()
        if bad:
            i = bad[0]
            raise NonFiniteError(
                f"the {name} of member {i} (seed {seeds[i]}) became {float(values[i])} at step {step}: the Q-values "
                "diverged, most likely from a learning rate that is too high (lower lr) or large unclipped rewards "
                "(set env.clip_rewards=true or keep max_grad_norm); rows up to this step are in the CSVs, and "
                "nan_check=false would let the run continue")
