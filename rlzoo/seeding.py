"""Per-member random streams.

Member ``i`` of a population is seeded with ``seed + i``; each consumer of randomness gets its own
stream of that seed, so adding a consumer (or a member) never shifts another one's draws.
"""

from __future__ import annotations

import random
from typing import Sequence

import numpy as np
import torch

EXPLORATION, REPLAY, EVAL_EXPLORATION, EVAL_ENV = 1, 2, 4, 5


def member_seeds(seed: int, population: int) -> list[int]:
    return [int(seed) + i for i in range(population)]


def member_rngs(seeds: Sequence[int], stream: int) -> list[np.random.Generator]:
    """One independent numpy generator per member for the given stream."""
    return [np.random.default_rng([int(s), int(stream)]) for s in seeds]


def evaluation_seeds(seeds: Sequence[int], step: int) -> tuple[list[int], list[np.random.Generator]]:
    """For the evaluation at ``step``: per member, a seed for its evaluation environment's reset and an
    exploration generator. Fresh at every evaluation, so that nothing carries over from the previous one:
    a member whose episodes end first keeps playing until every member has its episodes, and those extra
    steps must not change its next evaluation (a member's numbers never depend on the other members)."""
    # 31-bit seeds: ALE's vector environment takes int32
    env_seeds = [int(np.random.SeedSequence([int(s), EVAL_ENV, int(step)]).generate_state(1)[0] >> 1) for s in seeds]
    return env_seeds, [np.random.default_rng([int(s), EVAL_EXPLORATION, int(step)]) for s in seeds]


def global_rng_state() -> dict:
    return {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}


def load_global_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(tuple(state["numpy"]))
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
