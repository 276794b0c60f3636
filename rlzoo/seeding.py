"""Per-member random streams.

Member ``i`` of a population is seeded with ``seed + i``; each consumer of randomness gets its own
stream of that seed, so adding a consumer (or a member) never shifts another one's draws.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

EXPLORATION, REPLAY, EVAL_EXPLORATION = 1, 2, 4
EVAL_ENV_OFFSET = 1_000_003  # evaluation environments use seed + i + this offset


def member_seeds(seed: int, population: int) -> list[int]:
    return [int(seed) + i for i in range(population)]


def member_rngs(seeds: Sequence[int], stream: int) -> list[np.random.Generator]:
    """One independent numpy generator per member for the given stream."""
    return [np.random.default_rng([int(s), int(stream)]) for s in seeds]
