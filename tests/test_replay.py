import numpy as np
import pytest
from scipy import stats

from rlzoo.replay import UniformReplay


def fill(replay, n, P):
    for t in range(n):
        obs = np.full((P, 2), t, dtype=np.float32)
        replay.add(obs, np.full(P, t % 3), np.full(P, float(t)), obs + 1, np.zeros(P, bool), np.zeros(P, bool))


def test_samples_only_written_slots():
    replay = UniformReplay(capacity=100, batch_size=64, obs_shape=(2,), obs_dtype=np.float32, seeds=[0, 1])
    fill(replay, 7, P=2)
    for _ in range(20):
        batch = replay.sample()
        assert batch.obs.shape == (2, 64, 2)
        assert set(batch.reward.flatten().tolist()) <= set(map(float, range(7)))
        assert np.array_equal(batch.next_obs.numpy(), batch.obs.numpy() + 1)  # fields stay aligned


def test_uniform_sampling_chi_square():
    replay = UniformReplay(capacity=50, batch_size=200, obs_shape=(2,), obs_dtype=np.float32, seeds=[3])
    fill(replay, 20, P=1)
    counts = np.zeros(20)
    for _ in range(100):
        counts += np.bincount(replay.sample().reward.numpy().astype(int).ravel(), minlength=20)
    # 20,000 draws over 20 slots: the chi-square test must not reject uniformity
    assert stats.chisquare(counts).pvalue > 0.001
    assert counts.min() > 0


def test_wraps_around_at_capacity():
    replay = UniformReplay(capacity=5, batch_size=500, obs_shape=(2,), obs_dtype=np.float32, seeds=[0])
    fill(replay, 12, P=1)
    assert len(replay) == 5
    # the oldest 7 transitions were overwritten: only 7..11 remain
    assert set(replay.sample().reward.numpy().ravel().tolist()) == {7.0, 8.0, 9.0, 10.0, 11.0}


def test_members_sample_independently_and_reproducibly():
    a = UniformReplay(capacity=100, batch_size=32, obs_shape=(2,), obs_dtype=np.float32, seeds=[0, 1])
    b = UniformReplay(capacity=100, batch_size=32, obs_shape=(2,), obs_dtype=np.float32, seeds=[1])
    fill(a, 50, 2)
    fill(b, 50, 1)
    ia, ib = a.sample_indices(), b.sample_indices()
    assert not np.array_equal(ia[0], ia[1])
    assert np.array_equal(ia[1], ib[0])  # member 1 of a population == solo replay with seed 1


def test_rejects_bad_sizes():
    with pytest.raises(ValueError):
        UniformReplay(capacity=0, batch_size=1, obs_shape=(2,), obs_dtype=np.float32, seeds=[0])
