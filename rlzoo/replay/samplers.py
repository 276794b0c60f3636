"""Samplers: which stored transitions a minibatch replays, and with what importance weight.

A sampler works in the storage's slot space. The storage describes, per member, the slots that may be
sampled (``ValidSlots``: a circular range, which is always the most recently written transitions); the
replay tells the sampler which slot each ``add`` wrote (``added``) and, after a learner step, the new
priorities of the sampled slots (``update``). A sampler owns its random streams and serialises them.

Protocol (duck-typed; ``UniformSampler`` is the reference):

- ``sample(valid, batch_size) -> (indices [P, B] int64 slots, weights [P, B] float32 or None)``
- ``update(indices, priorities)``; ``added(slot)`` (the slot every member just wrote: members write in lockstep)
- ``state_dict()`` / ``load_state_dict(state)``

A sampler's constructor takes ``seeds`` and may take ``capacity`` (the size of the slot space) and
``total_updates`` (the learner updates of the run, for a schedule); ``Replay`` passes those it names.

``PrioritizedSampler`` is proportional prioritized replay (Schaul et al. 2016) on a per-member ``SumTree``.
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import numpy as np

from rlzoo.seeding import REPLAY, member_rngs


class ValidSlots(NamedTuple):
    """Member ``i`` may sample the ``size[i]`` slots ``(start[i] + j) % capacity``, ``0 <= j < size[i]``
    (its ``size[i]`` most recently written transitions)."""

    start: np.ndarray  # [P] int64
    size: np.ndarray  # [P] int64
    capacity: int
    oldest: np.ndarray | None = None  # [P] int64 absolute count of the oldest valid transition, where slots
    # can become invalid without being rewritten (FrameStorage); None: only a new write replaces a slot


class UniformSampler:
    """Uniform with replacement over each member's valid slots, from the member's own generator
    (``seed + i``'s REPLAY stream): member ``i`` of a population draws what a solo run with that seed draws.
    Importance weights are ``None`` (all equal)."""

    def __init__(self, seeds: Sequence[int]):
        self.rngs = member_rngs(seeds, REPLAY)

    def sample(self, valid: ValidSlots, batch_size: int) -> tuple[np.ndarray, None]:
        size = valid.size.reshape(-1, 1)
        # floor(u * size) for uniform u in [0, 1): uniform over the slots (to 2**-53), at half the cost of
        # Generator.integers; the minimum guards the one rounding case where u * size rounds up to size.
        u = np.stack([rng.random(batch_size) for rng in self.rngs])
        u *= size
        pos = u.astype(np.int64)
        np.minimum(pos, size - 1, out=pos)
        if valid.start.any():
            pos += valid.start[:, None]
            pos %= valid.capacity
        return pos, None

    def update(self, indices: np.ndarray, priorities) -> None:
        """Uniform sampling ignores priorities."""

    def added(self, slot: int) -> None:
        """Uniform sampling keeps no per-slot state."""

    def state_dict(self) -> dict:
        return {"rngs": [rng.bit_generator.state for rng in self.rngs]}

    def load_state_dict(self, state: dict) -> None:
        for rng, s in zip(self.rngs, state["rngs"]):
            rng.bit_generator.state = s


class SumTree:
    """Per member, a binary tree of sums over ``capacity`` non-negative leaf values (float64).

    Node 1 is the root, node ``j`` has children ``2j`` and ``2j + 1``, and slot ``s`` is leaf ``L + s``
    (``L``: ``capacity`` rounded up to a power of two). Every parent is recomputed from its two children
    when a leaf changes, so sums never drift however many updates there are. Stored node-major (``tree[node,
    member]``) and read through flat indices ``node * P + member``: one ``take`` per level and batch.
    """

    def __init__(self, population: int, capacity: int):
        self.population, self.capacity = int(population), int(capacity)
        self.depth = max(0, (self.capacity - 1).bit_length())
        self.leaves = 1 << self.depth
        self.tree = np.zeros((2 * self.leaves, self.population), dtype=np.float64)
        self._flat = self.tree.reshape(-1)  # a view
        self._members = np.arange(self.population)[:, None]

    def total(self) -> np.ndarray:
        """``[P]``: each member's sum of leaf values."""
        return self.tree[1]

    def get(self, slots: np.ndarray) -> np.ndarray:
        """Leaf values of ``slots`` ``[P, B]``."""
        return self._flat.take((np.asarray(slots) + self.leaves) * self.population + self._members)

    def set(self, slots: np.ndarray, values: np.ndarray) -> None:
        """Member ``i``'s leaves ``slots[i]`` get ``values[i]`` (``[P, B]``; a repeated slot gets one of
        its values), and their ancestors are recomputed."""
        flat, P, members = self._flat, self.population, self._members
        node = np.asarray(slots, dtype=np.int64) + self.leaves
        if P == 1:  # flat index = node
            flat.put(node, values)
            for _ in range(self.depth):
                node >>= 1
                left = node + node
                flat.put(node, flat.take(left) + flat.take(left + 1))
            return
        flat.put(node * P + members, values)
        for _ in range(self.depth):
            node >>= 1
            at = node * P + members
            left = at + at - members
            flat.put(at, flat.take(left) + flat.take(left + P))

    def set_slot(self, slot: int, values: np.ndarray) -> None:
        """Every member's leaf ``slot`` gets ``values`` (``[P]``), and its ancestors are recomputed."""
        tree, node = self.tree, int(slot) + self.leaves
        tree[node] = values
        for _ in range(self.depth):
            node >>= 1
            np.add(tree[2 * node], tree[2 * node + 1], out=tree[node])

    def zero(self, member: int, slots: np.ndarray) -> None:
        """Member ``member``'s leaves ``slots`` (distinct) become 0, and their ancestors are recomputed."""
        tree = self.tree[:, member]
        node = np.asarray(slots, dtype=np.int64) + self.leaves
        tree[node] = 0.0
        for _ in range(self.depth):
            node = np.unique(node >> 1)
            tree[node] = tree[2 * node] + tree[2 * node + 1]

    def find(self, targets: np.ndarray) -> np.ndarray:
        """For each ``targets[i, b]`` in ``[0, total_i)``, the slot ``s`` whose leaf interval
        ``[sum of leaves before s, that + leaf s)`` contains it: a draw with probability ``leaf / total``
        for a uniform target. Never a zero leaf, also when rounding puts a target at an interval's edge."""
        flat, P, members = self._flat, self.population, self._members
        t = np.array(targets, dtype=np.float64)
        at = np.broadcast_to(members, t.shape) + P  # flat index node * P + member, from the root (node 1)
        for _ in range(self.depth):
            at += at - members  # the left child
            left_sum = flat.take(at)
            right = t >= left_sum
            np.subtract(t, left_sum, out=t, where=right)
            at += right * P if P > 1 else right
        slots = (at - members) // P - self.leaves
        zero = flat.take(at) == 0  # rounding stepped past the last positive leaf of a subtree: go back to it
        if zero.any():
            for i, b in zip(*np.nonzero(zero)):
                slots[i, b] = self._last_positive(i, targets[i, b])
        return slots

    def _last_positive(self, member: int, target: float) -> int:
        """The slot for ``target`` by the guarded descent: right only into a subtree with a positive sum."""
        tree, node, t = self.tree[:, member], 1, float(target)
        for _ in range(self.depth):
            node *= 2
            if t >= tree[node] and tree[node + 1] > 0:
                t -= tree[node]
                node += 1
        return node - self.leaves


class PrioritizedSampler:
    """Proportional prioritized replay (Schaul et al. 2016, section 3.3 and Algorithm 1), per member.

    Transition ``i`` is drawn with probability ``P(i) = p_i ** alpha / sum_k p_k ** alpha`` where
    ``p_i = |delta_i| + eps`` (its latest TD error); a new transition gets the largest ``p`` seen so far
    (1 before any update). A minibatch of ``B`` is stratified as in the paper: the range
    ``[0, sum_k p_k ** alpha)`` is cut into ``B`` equal parts and one target drawn uniformly in each.
    Importance weights ``w_i = (N P(i)) ** -beta / max_j w_j`` correct the bias (``N``: the member's valid
    transitions; the max over the minibatch, as in the paper's Algorithm 1); ``beta`` rises linearly from
    ``beta`` to ``beta_end`` over ``beta_updates`` minibatches (None: the run's learner updates, which the
    replay passes as ``total_updates``), and stays there.

    Each member has its own sum tree and draws its targets from its own generator (``seed + i``'s REPLAY
    stream), so member ``i`` draws what a solo run with that seed draws. Slots outside the storage's
    valid range (``ValidSlots``) have priority 0 and are never drawn.
    """

    def __init__(self, seeds: Sequence[int], capacity: int, alpha: float = 0.6, beta: float = 0.4,
                 beta_end: float = 1.0, beta_updates: int | None = None, eps: float = 1e-6,
                 total_updates: int | None = None):
        if not (0.0 <= alpha < np.inf):
            raise ValueError(f"replay.sampler.alpha must be a number >= 0, got {alpha}")
        for key, value in (("beta", beta), ("beta_end", beta_end)):
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"replay.sampler.{key} must be in [0, 1], got {value}")
        if not 0.0 < eps < np.inf:
            raise ValueError(f"replay.sampler.eps must be > 0, got {eps}")
        anneal = beta_updates if beta_updates is not None else total_updates
        if anneal is None or int(anneal) < 1:
            raise ValueError(f"replay.sampler.beta_updates must be a whole number >= 1 (null: the run's learner "
                             f"updates), got {anneal}")
        self.rngs = member_rngs(seeds, REPLAY)
        self.population = len(self.rngs)
        self.alpha, self.beta0, self.beta_end, self.eps = float(alpha), float(beta), float(beta_end), float(eps)
        self.anneal = int(anneal)
        self.tree = SumTree(self.population, capacity)
        self.max_priority = np.ones(self.population, dtype=np.float64)  # the largest |delta| + eps seen
        self.draws = 0  # minibatches drawn so far
        self.oldest = np.zeros(self.population, dtype=np.int64)  # valid.oldest at the last sample

    def beta(self) -> float:
        """The importance-sampling exponent of the next minibatch."""
        return self.beta0 + (self.beta_end - self.beta0) * min(self.draws / self.anneal, 1.0)

    def sample(self, valid: ValidSlots, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
        self._forget(valid)
        B = batch_size
        total = self.tree.total()[:, None]
        u = np.stack([rng.random(B) for rng in self.rngs])  # one target per stratum
        targets = (np.arange(B) + u) * (total / B)
        slots = self.tree.find(targets)
        prob = self.tree.get(slots) / total
        weights = (valid.size[:, None] * prob) ** -self.beta()
        weights /= weights.max(axis=1, keepdims=True)
        self.draws += 1
        return slots, weights.astype(np.float32)

    def _forget(self, valid: ValidSlots) -> None:
        """Zero the priorities of slots that left the valid range without being rewritten."""
        if valid.oldest is None:
            return
        gone, C = valid.oldest - self.oldest, valid.capacity
        for i in np.flatnonzero(gone):
            slots = np.arange(C) if gone[i] >= C else (self.oldest[i] + np.arange(gone[i])) % C
            slots = slots[(slots - valid.start[i]) % C >= valid.size[i]]  # those not rewritten since
            if len(slots):
                self.tree.zero(i, slots)
        self.oldest = valid.oldest.copy()

    def update(self, indices: np.ndarray, priorities) -> None:
        """``p = |priorities| + eps`` (``[P, B]``, e.g. TD errors) for the slots ``indices`` of the last sample."""
        p = np.abs(priorities.cpu().numpy() if hasattr(priorities, "cpu") else np.asarray(priorities))
        p = p.astype(np.float64) + self.eps
        np.maximum(self.max_priority, p.max(axis=1), out=self.max_priority)
        self.tree.set(indices, p ** self.alpha)

    def added(self, slot: int) -> None:
        """A new transition in ``slot`` (every member) gets the largest priority seen so far."""
        self.tree.set_slot(slot, self.max_priority ** self.alpha)

    def state_dict(self) -> dict:
        return {"rngs": [rng.bit_generator.state for rng in self.rngs], "tree": self.tree.tree.copy(),
                "max_priority": self.max_priority.copy(), "draws": self.draws, "oldest": self.oldest.copy()}

    def load_state_dict(self, state: dict) -> None:
        for rng, s in zip(self.rngs, state["rngs"]):
            rng.bit_generator.state = s
        self.tree.tree[...] = state["tree"]  # in place: the flat view stays valid
        self.max_priority[...] = state["max_priority"]
        self.draws = int(state["draws"])
        self.oldest[...] = state["oldest"]
