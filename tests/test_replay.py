import functools

import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from scipy import stats

from rlzoo.replay import (FrameStorage, Replay, TransitionStorage, UniformReplay, UniformSampler, ValidSlots)

from conftest import make_cfg


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


def uniformity_pvalues(sampler, valid: ValidSlots, batch_size=250, batches=400) -> list[float]:
    """Per member: the chi-square p-value of 100,000 draws' frequencies over its valid slots (asserting
    that no draw falls outside them)."""
    P, C = len(valid.size), valid.capacity
    counts = np.zeros((P, C), np.int64)
    for _ in range(batches):
        idx, weights = sampler.sample(valid, batch_size)
        assert idx.shape == (P, batch_size) and idx.dtype == np.int64 and weights is None
        for i in range(P):
            counts[i] += np.bincount(idx[i], minlength=C)
    pvalues = []
    for i in range(P):
        inside = (valid.start[i] + np.arange(valid.size[i])) % C
        assert counts[i].sum() == counts[i, inside].sum(), f"member {i} sampled a slot outside its valid range"
        pvalues.append(stats.chisquare(counts[i, inside]).pvalue)
    return pvalues


VALID_RANGES = {  # (start, size) per member, capacity 50
    "filling": ([0, 0], [20, 20], 50),
    "full": ([0, 0], [50, 50], 50),
    "wrapped": ([45, 45], [20, 20], 50),  # the frame storage's range after wrap-around: slots 45..49, 0..14
    "per_member": ([0, 37], [13, 20], 50),
}


@pytest.mark.parametrize("start, size, capacity", VALID_RANGES.values(), ids=VALID_RANGES.keys())
def test_uniform_sampler_frequencies_pass_chi_square(start, size, capacity):
    # Fixed seeds: deterministic. 100,000 draws per member make the test sensitive: samplers with a modulo
    # bias (integers(0, 256) % size), an off-by-one (never the newest slot) or one slot of 20 drawn 10% too
    # often give p-values below 1e-7 (checked when this test was written); this one gives about 0.1.
    valid = ValidSlots(np.array(start, np.int64), np.array(size, np.int64), capacity)
    assert min(uniformity_pvalues(UniformSampler([11, 12]), valid)) > 0.001


def test_batch_carries_the_sampled_slots_and_gather_reads_them():
    replay = UniformReplay(capacity=30, batch_size=40, obs_shape=(2,), obs_dtype=np.float32, seeds=[0, 1])
    fill(replay, 45, P=2)  # wrapped: slot s holds transition 30 + s for s < 15, else transition s
    twin = UniformReplay(capacity=30, batch_size=40, obs_shape=(2,), obs_dtype=np.float32, seeds=[0, 1])
    fill(twin, 45, P=2)
    batch = replay.sample()
    assert batch.indices.shape == (2, 40) and batch.indices.dtype == np.int64 and batch.weights is None
    assert np.array_equal(batch.indices, twin.sample_indices())  # the same draws as sample_indices
    stored = np.where(batch.indices < 15, 30 + batch.indices, batch.indices).astype(np.float32)
    np.testing.assert_array_equal(batch.reward.numpy(), stored)
    np.testing.assert_array_equal(batch.obs.numpy()[..., 0], stored)
    for i in range(2):  # member i reads its own storage row at its own slots
        np.testing.assert_array_equal(batch.action[i].numpy(), replay.storage.action[i, batch.indices[i]].numpy())
    again = replay.storage.gather(batch.indices)
    for field in ("obs", "action", "reward", "next_obs", "terminated", "indices"):
        torch.testing.assert_close(getattr(again, field), getattr(batch, field))


def test_transition_storage_add_returns_the_slot_and_valid_range():
    storage = TransitionStorage(capacity=4, obs_shape=(2,), obs_dtype=np.float32, population=3)
    slots = []
    for t in range(6):
        obs = np.full((3, 2), t, np.float32)
        slots.append(storage.add(obs, np.zeros(3, np.int64), np.zeros(3), obs, np.zeros(3, bool)))
    assert slots == [0, 1, 2, 3, 0, 1]
    valid = storage.valid()
    assert valid.capacity == 4 and list(valid.size) == [4, 4, 4] and not valid.start.any()
    storage.restart_episodes()  # nothing to restart: s and s' are stored whole
    assert len(storage) == 4


class _RecordingSampler(UniformSampler):
    """A uniform sampler that records the hooks' calls."""

    def __init__(self, seeds):
        super().__init__(seeds)
        self.slots_added, self.updates = [], []

    def added(self, slot):
        self.slots_added.append(slot)

    def update(self, indices, priorities):
        self.updates.append((indices, priorities))


@pytest.mark.parametrize("storage", [TransitionStorage, FrameStorage])
def test_both_storages_work_with_the_same_sampler(storage):
    K = 4
    replay = Replay(capacity=20, batch_size=16, storage=storage, sampler=_RecordingSampler,
                    obs_shape=(K, 3, 3), obs_dtype=np.uint8, seeds=[0, 1])
    assert isinstance(replay.storage, storage) and type(replay.sampler) is _RecordingSampler
    obs = np.zeros((2, K, 3, 3), np.uint8)
    obs[:, -1] = 1
    for t in range(30):  # one 30-step episode of consecutive frames
        nxt = np.concatenate([obs[:, 1:], np.full((2, 1, 3, 3), t + 2, np.uint8)], axis=1)
        replay.add(obs, np.full(2, t % 4), np.full(2, float(t)), nxt, np.zeros(2, bool), np.zeros(2, bool))
        obs = nxt
    assert replay.sampler.slots_added == [t % 20 for t in range(30)]
    batch = replay.sample()
    assert batch.obs.shape == (2, 16, K, 3, 3) and batch.indices.shape == (2, 16)
    # the 20 most recent transitions (10 .. 29) are in slots t % 20
    expected_t = np.where(batch.indices < 10, batch.indices + 20, batch.indices)
    np.testing.assert_array_equal(batch.reward.numpy(), expected_t.astype(np.float32))
    np.testing.assert_array_equal(batch.next_obs[:, :, -1, 0, 0].numpy(), expected_t + 2)
    td_error = torch.ones(2, 16)
    replay.update_priorities(batch.indices, td_error)
    assert replay.sampler.updates[-1][0] is batch.indices and replay.sampler.updates[-1][1] is td_error


def test_update_priorities_is_accepted_and_changes_nothing_for_uniform():
    a = UniformReplay(capacity=50, batch_size=32, obs_shape=(2,), obs_dtype=np.float32, seeds=[0, 1])
    b = UniformReplay(capacity=50, batch_size=32, obs_shape=(2,), obs_dtype=np.float32, seeds=[0, 1])
    fill(a, 30, 2)
    fill(b, 30, 2)
    for _ in range(5):
        batch = a.sample()
        a.update_priorities(batch.indices, torch.rand(2, 32) * 10)
        assert np.array_equal(batch.indices, b.sample().indices)


def test_state_dict_round_trip_gives_the_same_future_samples_and_keeps_dtypes():
    a = UniformReplay(capacity=40, batch_size=16, obs_shape=(2,), obs_dtype=np.float32, seeds=[0, 1])
    fill(a, 55, 2)
    a.sample()
    b = UniformReplay(capacity=40, batch_size=16, obs_shape=(2,), obs_dtype=np.float32, seeds=[0, 1])
    state = a.state_dict()
    b.load_state_dict(state)
    for key in ("obs", "next_obs", "action", "reward", "terminated"):
        assert state["storage"][key].dtype == getattr(a.storage, key).dtype
    for _ in range(3):
        fill(a, 1, 2)
        fill(b, 1, 2)
        for x, y in zip(a.sample(), b.sample()):
            torch.testing.assert_close(x, y)


@pytest.mark.parametrize("name, obs_shape, obs_dtype, storage", [("uniform", (3,), np.float32, TransitionStorage),
                                                                ("frames", (4, 5, 5), np.uint8, FrameStorage)])
def test_replay_configs_compose_a_storage_and_a_sampler(name, obs_shape, obs_dtype, storage):
    cfg = make_cfg(f"replay={name}", "buffer_size=64", "batch_size=8")
    replay = instantiate(cfg.replay, obs_shape=obs_shape, obs_dtype=obs_dtype, seeds=[3, 4], device=torch.device("cpu"))
    assert isinstance(replay, Replay) and isinstance(replay.storage, storage)
    assert isinstance(replay.sampler, UniformSampler)
    assert (replay.capacity, replay.batch_size, replay.storage.capacity) == (64, 8, 64)


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


def test_draws_are_floor_u_times_size_from_the_members_replay_stream():
    """The sampling stream is pinned: member i's slots are floor(u * size) for u from its REPLAY generator."""
    from rlzoo.seeding import REPLAY, member_rngs
    replay = UniformReplay(capacity=100, batch_size=32, obs_shape=(2,), obs_dtype=np.float32, seeds=[5, 9])
    fill(replay, 37, 2)
    rngs = member_rngs([5, 9], REPLAY)
    for _ in range(3):
        expected = np.stack([np.minimum((rng.random(32) * 37).astype(np.int64), 36) for rng in rngs])
        assert np.array_equal(replay.sample_indices(), expected)


def test_sampling_an_empty_memory_is_an_error():
    replay = UniformReplay(capacity=10, batch_size=2, obs_shape=(2,), obs_dtype=np.float32, seeds=[0])
    with pytest.raises(RuntimeError, match="empty"):
        replay.sample()


def test_rejects_bad_sizes():
    with pytest.raises(ValueError):
        UniformReplay(capacity=0, batch_size=1, obs_shape=(2,), obs_dtype=np.float32, seeds=[0])
    with pytest.raises(ValueError, match="batch_size"):
        Replay(10, 0, functools.partial(TransitionStorage), UniformSampler, (2,), np.float32, [0])


def test_torch_storage_path_used_on_cuda_equals_the_numpy_path():
    """The device code path (torch indexing, used on CUDA) run on the CPU gives the same batches."""
    a = UniformReplay(capacity=20, batch_size=16, obs_shape=(2,), obs_dtype=np.float32, seeds=[0, 1])
    b = UniformReplay(capacity=20, batch_size=16, obs_shape=(2,), obs_dtype=np.float32, seeds=[0, 1])
    b.storage._np = None  # force the torch path
    fill(a, 33, 2)
    fill(b, 33, 2)
    for _ in range(3):
        for x, y in zip(a.sample(), b.sample()):
            torch.testing.assert_close(x, y)
