"""Epsilon-greedy action selection (rlzoo.loop.epsilon_greedy) with per-member generators."""

import numpy as np
import pytest

from rlzoo.loop import epsilon_greedy


class FixedQ:
    """An agent stub whose Q-values are fixed; counts how often it is evaluated."""

    def __init__(self, q):
        self.q, self.calls = np.asarray(q, dtype=np.float32), 0

    def q_values(self, obs):
        self.calls += 1
        return self.q


def rngs(*seeds):
    return [np.random.default_rng(s) for s in seeds]


def test_greedy_picks_the_argmax_without_drawing_ties():
    agent = FixedQ([[0.1, 0.7, 0.3], [2.0, -1.0, 1.9]])
    actions, max_q = epsilon_greedy(agent, None, 0.0, rngs(0, 1), 3)
    assert actions.tolist() == [1, 0] and actions.dtype == np.int64
    assert np.allclose(max_q, [0.7, 2.0])


def test_ties_are_broken_uniformly_and_only_among_the_best():
    agent = FixedQ([[1.0, 0.0, 1.0, 1.0]])
    gen = rngs(3)
    counts = np.bincount([epsilon_greedy(agent, None, 0.0, gen, 4)[0][0] for _ in range(3000)], minlength=4)
    assert counts[1] == 0
    assert all(abs(c / 3000 - 1 / 3) < 0.04 for c in counts[[0, 2, 3]])  # 4+ standard deviations


def test_full_exploration_is_uniform_and_skips_the_network():
    agent = FixedQ([[5.0, 0.0, 0.0]])
    gen = rngs(4)
    actions = [epsilon_greedy(agent, None, 1.0, gen, 3)[0][0] for _ in range(3000)]
    assert agent.calls == 0
    assert all(abs(c / 3000 - 1 / 3) < 0.04 for c in np.bincount(actions, minlength=3))
    _, max_q = epsilon_greedy(agent, None, 1.0, gen, 3, need_q=True)
    assert agent.calls == 1 and max_q.tolist() == [5.0]


@pytest.mark.parametrize("epsilon", [0.1, 0.5])
def test_exploration_rate(epsilon):
    agent = FixedQ([[1.0, 0.0]])  # action 1 is taken only when exploring (half of the random actions)
    gen = rngs(5)
    ones = sum(epsilon_greedy(agent, None, epsilon, gen, 2)[0][0] for _ in range(4000))
    assert abs(ones / 4000 - epsilon / 2) < 4 * np.sqrt(epsilon / 2 * (1 - epsilon / 2) / 4000)


def test_member_draws_do_not_depend_on_the_other_members():
    q = [[0.0, 0.0, 1.0], [1.0, 1.0, 1.0], [0.0, 2.0, 0.0]]
    pop_rngs, solo_rngs = rngs(10, 11, 12), rngs(11)
    for _ in range(200):
        pop, _ = epsilon_greedy(FixedQ(q), None, 0.3, pop_rngs, 3)
        solo, _ = epsilon_greedy(FixedQ(q[1:2]), None, 0.3, solo_rngs, 3)
        assert pop[1] == solo[0]
