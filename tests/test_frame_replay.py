"""FrameReplay stores each frame once and rebuilds exactly the stacks the environment produced."""

import numpy as np
import pytest
import torch

from rlzoo.envs.atari import make_atari_env
from rlzoo.replay.frames import FrameReplay
from rlzoo.replay import UniformReplay

K, H, W = 4, 6, 5


class StackedTrajectory:
    """A recorded trajectory of stacked observations [K, H, W] like the ALE's: a new episode's first
    stack is [0, 0, 0, f0] (or ``pad="repeat"``: [f0, f0, f0, f0]); frame pixels encode
    (episode, step) so that a stack that mixed two episodes would be visible. ``lives`` > 1 adds
    episodic-life losses: terminated, but the game (and its stack) goes on."""

    def __init__(self, rng, population=1, pad="zero", mean_len=6, lives=1):
        self.rng, self.P, self.pad, self.mean_len, self.lives = rng, population, pad, mean_len, lives
        self.episode = np.arange(population) * 1000
        self.stacks = [self._start(i) for i in range(population)]
        self.left = [self._length() for _ in range(population)]
        self.lives_left = [lives] * population

    def _length(self):
        return int(self.rng.integers(1, 2 * self.mean_len))

    def _frame(self, i, step):
        f = np.full((H, W), 1 + (self.episode[i] % 200), dtype=np.uint8)
        f[0, 0], f[0, 1] = step % 251 + 1, self.episode[i] // 200 + 1
        return f

    def _start(self, i):
        self.step_no = getattr(self, "step_no", np.zeros(self.P, dtype=int))
        self.step_no[i] = 0
        f0 = self._frame(i, 0)
        first = np.zeros((K, H, W), np.uint8) if self.pad == "zero" else np.repeat(f0[None], K, 0)
        first[-1] = f0
        return first

    def step(self):
        """Returns (obs, action, reward, next_obs, terminated, truncated) with [P, ...] arrays;
        ``next_obs`` is the true next observation."""
        obs = np.stack(self.stacks)
        nxt, term, trunc = np.empty_like(obs), np.zeros(self.P, bool), np.zeros(self.P, bool)
        action, reward = self.rng.integers(0, 6, self.P), self.rng.normal(size=self.P).astype(np.float32)
        for i in range(self.P):
            self.step_no[i] += 1
            nxt[i] = np.concatenate([obs[i][1:], self._frame(i, self.step_no[i])[None]])
            self.left[i] -= 1
            self.stacks[i] = nxt[i]
            if self.left[i] == 0:
                self.left[i] = self._length()
                if self.lives_left[i] > 1:  # a life lost: terminal for the learner, the game goes on
                    self.lives_left[i] -= 1
                    term[i] = True
                    continue
                self.lives_left[i] = self.lives
                term[i] = self.rng.random() < 0.7
                trunc[i] = not term[i]
                self.episode[i] += 1
                self.stacks[i] = self._start(i)
        return obs, action, reward, nxt, term, trunc


def fill_both(traj, steps, capacity, frame_capacity=None, seeds=None):
    seeds = seeds or list(range(traj.P))
    frames = FrameReplay(capacity, 8, (K, H, W), np.uint8, seeds, frame_capacity=frame_capacity)
    naive = UniformReplay(capacity, 8, (K, H, W), np.uint8, seeds)
    for _ in range(steps):
        obs, a, r, nxt, term, trunc = traj.step()
        frames.add(obs, a, r, nxt, term, trunc)
        naive.add(obs, a, r, nxt, term, trunc)
    return frames, naive


def usable_slots(replay: FrameReplay, member: int) -> np.ndarray:
    return np.arange(replay.storage.oldest[member], replay.storage.added) % replay.capacity


def assert_same_as_naive(frames: FrameReplay, naive: UniformReplay):
    for i in range(frames.population):
        slots = usable_slots(frames, i)
        assert len(slots) > 0
        rebuilt = frames.storage.gather(np.tile(slots, (frames.population, 1)))
        for field in ("obs", "next_obs", "action", "reward", "terminated"):
            got = getattr(rebuilt, field)[i].numpy()
            want = getattr(naive.storage, field)[i, slots].numpy()
            np.testing.assert_array_equal(got, want, err_msg=f"member {i} field {field}")


@pytest.mark.parametrize("pad", ["zero", "repeat"])
@pytest.mark.parametrize("lives", [1, 3])
def test_stacks_equal_naive_buffer_on_recorded_trajectory(pad, lives):
    traj = StackedTrajectory(np.random.default_rng(0), population=3, pad=pad, lives=lives)
    frames, naive = fill_both(traj, steps=120, capacity=500)  # no wrap-around
    assert len(frames) == 120
    assert_same_as_naive(frames, naive)


def test_wraparound_keeps_the_most_recent_transitions_exactly():
    traj = StackedTrajectory(np.random.default_rng(1), population=2, mean_len=40, lives=2)
    frames, naive = fill_both(traj, steps=1000, capacity=150)  # the transition ring wraps 6 times
    assert frames.storage.added == 1000
    # episodes of ~40 steps use about L + 1 frames each; the default frame store (150 + 1 + 8) holds
    # almost all of the last 150 transitions, and exactly those that are usable are sampled
    assert 140 <= len(frames) <= 150
    assert (frames.storage.oldest >= 1000 - 150).all()
    assert_same_as_naive(frames, naive)


def test_short_episodes_in_a_small_frame_store_drop_the_oldest_transitions_not_correctness():
    traj = StackedTrajectory(np.random.default_rng(2), population=2, pad="repeat", mean_len=2)
    frames, naive = fill_both(traj, steps=400, capacity=100, frame_capacity=110)
    assert 0 < len(frames) < 100  # 1-3 step episodes need up to 5 frames each: fewer usable transitions
    assert_same_as_naive(frames, naive)
    # valid() offers a sampler exactly the usable slots
    valid = frames.storage.valid()
    for i in range(2):
        offered = (valid.start[i] + np.arange(valid.size[i])) % valid.capacity
        assert np.array_equal(offered, usable_slots(frames, i))
    # every sampled slot is a usable one
    for _ in range(20):
        idx = frames.sample_indices()
        for i in range(2):
            age = (frames.storage.added - 1 - idx[i]) % frames.capacity  # 0 = newest
            assert (age < frames.storage.added - frames.storage.oldest[i]).all()


def test_no_sampled_stack_crosses_an_episode_start():
    traj = StackedTrajectory(np.random.default_rng(3), population=2, mean_len=3)
    frames, _ = fill_both(traj, steps=600, capacity=200)
    for _ in range(30):
        b = frames.sample()
        for stacks in (b.obs, b.next_obs):
            s = stacks.numpy().reshape(-1, K, H, W)
            for stack in s:
                real = stack[stack.reshape(K, -1).any(axis=1)]
                assert len(real) >= 1 and (stack[-1] != 0).any()
                # zero padding only before the first real frame; all real frames from one episode,
                # with consecutive step numbers
                n_pad = K - len(real)
                assert not stack[:n_pad].any() and stack[n_pad:].reshape(len(real), -1).any(axis=1).all()
                assert len({(f[0, 1], f[1, 1]) for f in real}) == 1
                steps = real[:, 0, 0].astype(int)
                assert (np.diff(steps) == 1).all()


def test_population_member_replays_what_a_solo_run_replays():
    rng_a, rng_b = np.random.default_rng(4), np.random.default_rng(4)
    pop, _ = fill_both(StackedTrajectory(rng_a, population=2), steps=200, capacity=64, seeds=[7, 8])
    # a solo memory seeded 8 fed member 1's data
    traj = StackedTrajectory(rng_b, population=2)
    solo = FrameReplay(64, 8, (K, H, W), np.uint8, [8])
    for _ in range(200):
        obs, a, r, nxt, term, trunc = traj.step()
        solo.add(obs[1:], a[1:], r[1:], nxt[1:], term[1:], trunc[1:])
    for _ in range(5):
        p, s = pop.sample(), solo.sample()
        assert p.weights is None and s.weights is None
        for field in ("obs", "action", "reward", "next_obs", "terminated", "indices"):
            torch.testing.assert_close(getattr(p, field)[1], getattr(s, field)[0])


def test_batch_carries_the_sampled_slots():
    traj = StackedTrajectory(np.random.default_rng(7), population=2, mean_len=5)
    frames, naive = fill_both(traj, steps=300, capacity=120)
    for _ in range(5):
        b = frames.sample()
        assert b.indices.shape == (2, 8) and b.indices.dtype == np.int64 and b.weights is None
        for i in range(2):
            for field in ("obs", "next_obs", "action", "reward", "terminated"):
                want = getattr(naive.storage, field)[i, b.indices[i]]
                np.testing.assert_array_equal(getattr(b, field)[i].numpy(), want.numpy())
        frames.update_priorities(b.indices, torch.ones(2, 8))  # accepted; uniform sampling ignores it


def test_restart_episodes_starts_new_segments():
    """After the environments were reset outside the loop (a resume that could not restore them), the next
    observation does not continue the stored stacks: restart_episodes makes the next add store it whole."""
    def run(restart: bool):
        first = StackedTrajectory(np.random.default_rng(8), population=2, mean_len=30)
        frames, naive = fill_both(first, steps=25, capacity=200)
        if restart:
            frames.restart_episodes()
            naive.restart_episodes()  # a no-op for whole transitions
        second = StackedTrajectory(np.random.default_rng(9), population=2, mean_len=30)
        second.episode += 500  # other episodes: a stack mixing the two would show
        for _ in range(25):
            step = second.step()
            frames.add(*step)
            naive.add(*step)
        return frames, naive

    assert_same_as_naive(*run(restart=True))
    with pytest.raises(AssertionError):  # without it, the first new s is rebuilt from the old episode's frames
        assert_same_as_naive(*run(restart=False))


def test_state_dict_round_trip_gives_the_same_future_samples():
    traj = StackedTrajectory(np.random.default_rng(5), population=2)
    a, _ = fill_both(traj, steps=300, capacity=100)
    b = FrameReplay(100, 8, (K, H, W), np.uint8, [0, 1])
    b.load_state_dict(a.state_dict())
    for _ in range(3):
        obs, act, r, nxt, term, trunc = traj.step()
        a.add(obs, act, r, nxt, term, trunc)
        b.add(obs, act, r, nxt, term, trunc)
        for x, y in zip(a.sample(), b.sample()):
            torch.testing.assert_close(x, y)


def test_memory_per_transition_fits_a_million_atari_transitions_in_7_5_gib():
    r = FrameReplay(20_000, 32, (4, 84, 84), np.uint8, [0])
    nbytes = sum(t.numel() * t.element_size() for t in (r.storage.frames, r.storage.action, r.storage.reward, r.storage.terminated))
    nbytes += r.storage.last.nbytes + r.storage.first.nbytes
    per_transition = nbytes / r.capacity
    assert per_transition * 1_000_000 <= 7.5 * 2**30
    assert per_transition < 84 * 84 * 1.02 + 40  # one frame plus bookkeeping


def test_rejects_observations_that_are_not_frame_stacks():
    with pytest.raises(ValueError, match="replay=uniform"):
        FrameReplay(10, 2, (4,), np.float32, [0])
    r = FrameReplay(10, 2, (4, 10, 10), np.uint8, [0])
    obs = np.random.default_rng(0).integers(0, 2, (1, 4, 10, 10), dtype=np.uint8)  # MinAtar-like channels
    nxt = np.random.default_rng(1).integers(0, 2, (1, 4, 10, 10), dtype=np.uint8)
    with pytest.raises(ValueError, match="stacks of consecutive frames"):
        r.add(obs, [0], [0.0], nxt, [False], [False])


def test_real_atari_trajectory_with_life_losses_matches_naive_buffer():
    """Breakout, 2 members, episodic life: the replay rebuilds the ALE's own stacks."""
    envs, spec = make_atari_env("ALE/Breakout-v5", 2, episodic_life=True, fire_reset=True, num_threads=1)
    rng = np.random.default_rng(0)
    frames = FrameReplay(300, 8, spec.obs_shape, np.uint8, [0, 1])
    naive = UniformReplay(300, 8, spec.obs_shape, np.uint8, [0, 1])
    obs, _ = envs.reset(seed=[0, 1])
    ends = lives_lost = 0
    for _ in range(450):
        a = rng.integers(0, spec.num_actions, 2)
        nxt, r, term, trunc, info = envs.step(a)
        done = term | trunc
        real = nxt.copy()
        for i in np.flatnonzero(done):
            real[i] = info["final_obs"][i]
        frames.add(obs, a, r, real, term, trunc)
        naive.add(obs, a, r, real, term, trunc)
        ends += int(info["game_over"].sum())
        lives_lost += int((done & ~info["game_over"]).sum())
        obs = nxt
    envs.close()
    assert ends >= 1 and lives_lost >= 4  # the recording has game ends and life losses
    assert len(frames) == 300
    assert_same_as_naive(frames, naive)


def test_torch_storage_path_used_on_cuda_equals_the_numpy_path():
    """The device code path (torch indexing, used on CUDA) run on the CPU gives the same batches."""
    traj_a = StackedTrajectory(np.random.default_rng(6), population=2, mean_len=4, lives=2)
    traj_b = StackedTrajectory(np.random.default_rng(6), population=2, mean_len=4, lives=2)
    a = FrameReplay(60, 8, (K, H, W), np.uint8, [0, 1])
    b = FrameReplay(60, 8, (K, H, W), np.uint8, [0, 1])
    b.storage._np = None  # force the torch path
    for _ in range(200):
        a.add(*traj_a.step())
        b.add(*traj_b.step())
    for _ in range(5):
        for x, y in zip(a.sample(), b.sample()):
            torch.testing.assert_close(x, y)
