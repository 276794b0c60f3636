"""Run-time guards: stop a run that has gone numerically wrong instead of logging nonsense for hours, naming
the source: the environment (``check_env_output``) or the learning (``check_finite``)."""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
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


def check_env_output(obs: np.ndarray, reward: np.ndarray, step: int, seeds: Sequence[int], env: str = "") -> None:
    """Raise ``NonFiniteError`` naming the member, its seed, the step and whether the reward or the observation
    is NaN or infinite, when the environment itself returned one (before it reaches the replay memory, where
    it would surface later as a diverged loss). Integer observations (pixels, discrete states) cannot be."""
    reward, obs = np.asarray(reward), np.asarray(obs)
    floats = obs.dtype.kind == "f"
    # One sum (NaN and inf propagate into it); plain Python for the small arrays of most games (~1 us a step).
    total = sum(reward.tolist()) if reward.size <= 64 else float(reward.sum())
    if floats:
        total += sum(obs.ravel().tolist()) if obs.size <= 64 else float(obs.sum())
    if math.isfinite(total):
        return
    bad_reward = not np.isfinite(reward).all()
    bad_obs = floats and not np.isfinite(obs).all()
    if not (bad_reward or bad_obs):  # finite values whose sum overflowed
        return
    source = f"the environment{f' {env}' if env else ''}"
    if bad_reward:
        i = int(np.flatnonzero(~np.isfinite(reward))[0])
        what = f"a reward of {float(reward[i])}"
    else:
        member_bad = ~np.isfinite(obs.reshape(len(obs), -1))
        i = int(np.flatnonzero(member_bad.any(axis=1))[0])
        j = int(np.flatnonzero(member_bad[i])[0])
        what = f"an observation whose element {j} is {float(obs.reshape(len(obs), -1)[i, j])}"
    raise NonFiniteError(
        f"{source} returned {what} to member {i} (seed {seeds[i]}) at step {step}: the environment produced it, "
        "not the learning; fix the environment (or its env.kwargs / wrapper), or set nan_check=false to store it "
        "as it is")
