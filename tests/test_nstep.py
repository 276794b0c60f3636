"""n-step returns: the writer's transitions against hand-computed ones (terminations, truncations, several
members), both storages, the target rule with gamma**k, and real runs (member = solo, CartPole and MinAtar)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import make_cfg, read_rows
from rlzoo import targets
from rlzoo.agents.dqn import DQNAgent
from rlzoo.nets import MLP, ObservationEncoder, QHead, QNetwork, member_generators
from rlzoo.replay import Batch, FrameStorage, NStepWriter, Replay, TransitionStorage, UniformSampler
from rlzoo.train import train
from test_frame_replay import H, K, W, StackedTrajectory

GAMMA, N = 0.5, 3
# Two members, seven steps. Member 0 terminates at step 2; member 1 is truncated at step 1 and terminates at step 5.
REWARDS = np.array([[1, 2, 4, 8, 16, 32, 64], [1, 1, 1, 1, 1, 1, 1]], dtype=np.float32)
TERMINATED = np.array([[0, 0, 1, 0, 0, 0, 0], [0, 0, 0, 0, 0, 1, 0]], dtype=bool)
TRUNCATED = np.array([[0, 0, 0, 0, 0, 0, 0], [0, 1, 0, 0, 0, 0, 0]], dtype=bool)
# By hand, gamma = 0.5, n = 3: (R, terminated, gamma**k, step whose s' is the bootstrap state)
EXPECTED = [
    [(1 + 0.5 * 2 + 0.25 * 4, 1, 0.125, 2),  # t=0: steps 0-2, step 2 terminal
     (2 + 0.5 * 4, 1, 0.25, 2),              # t=1: cut at the termination (k=2)
     (4, 1, 0.5, 2),                         # t=2: k=1
     (8 + 0.5 * 16 + 0.25 * 32, 0, 0.125, 5),  # t=3: a new episode, full window
     (16 + 0.5 * 32 + 0.25 * 64, 0, 0.125, 6)],
    [(1 + 0.5 * 1, 0, 0.25, 1),              # t=0: cut at the truncation (k=2), bootstraps from s' of step 1
     (1, 0, 0.5, 1),                         # t=1: k=1, still bootstraps
     (1 + 0.5 + 0.25, 0, 0.125, 4),          # t=2
     (1 + 0.5 + 0.25, 1, 0.125, 5),          # t=3: step 5 terminal within the window
     (1 + 0.5, 1, 0.25, 5)],                 # t=4: k=2
]


def obs_of(step: int, member: int) -> np.ndarray:
    return np.array([step, member], dtype=np.float32)


def next_obs_of(step: int, member: int) -> np.ndarray:
    """s' of ``step``: the episode's final observation at an end (marked by +100), else the next obs."""
    ended = TERMINATED[member, step] or TRUNCATED[member, step]
    return np.array([step + 1 + (100 if ended else 0), member], dtype=np.float32)


def feed(storage, members=(0, 1)):
    slots = []
    for t in range(REWARDS.shape[1]):
        m = list(members)
        slots.append(storage.add(np.stack([obs_of(t, i) for i in m]), np.array([10 * t + i for i in m]),
                                 REWARDS[m, t], np.stack([next_obs_of(t, i) for i in m]), TERMINATED[m, t],
                                 TRUNCATED[m, t]))
    return slots


def test_writer_matches_hand_computed_returns_across_termination_and_truncation():
    storage = TransitionStorage(capacity=10, obs_shape=(2,), obs_dtype=np.float32, population=2, n_step=N, gamma=GAMMA)
    slots = feed(storage)
    assert slots == [None, None, 0, 1, 2, 3, 4]  # n - 1 = 2 steps behind, every member in lockstep
    batch = storage.gather(np.tile(np.arange(5), (2, 1)))
    for i in range(2):
        for t, (ret, term, discount, boot) in enumerate(EXPECTED[i]):
            assert batch.reward[i, t].item() == pytest.approx(ret, abs=1e-6), (i, t)
            assert batch.terminated[i, t].item() == term, (i, t)
            assert batch.discount[i, t].item() == discount, (i, t)
            assert batch.obs[i, t].tolist() == obs_of(t, i).tolist()
            assert batch.action[i, t].item() == 10 * t + i
            assert batch.next_obs[i, t].tolist() == next_obs_of(boot, i).tolist(), (i, t)


def test_population_member_writes_what_a_solo_storage_writes():
    pop = TransitionStorage(capacity=10, obs_shape=(2,), obs_dtype=np.float32, population=2, n_step=N, gamma=GAMMA)
    solo = TransitionStorage(capacity=10, obs_shape=(2,), obs_dtype=np.float32, population=1, n_step=N, gamma=GAMMA)
    feed(pop)
    feed(solo, members=(1,))
    a, b = pop.gather(np.tile(np.arange(5), (2, 1))), solo.gather(np.arange(5)[None])
    for field in ("obs", "action", "reward", "next_obs", "terminated", "discount"):
        assert torch.equal(getattr(a, field)[1:], getattr(b, field)), field


def test_one_step_storage_is_unchanged_and_has_no_discount():
    storage = TransitionStorage(capacity=10, obs_shape=(2,), obs_dtype=np.float32, population=2)
    assert feed(storage) == list(range(7))
    batch = storage.gather(np.tile(np.arange(7), (2, 1)))
    assert batch.discount is None and torch.equal(batch.reward, torch.from_numpy(REWARDS))


def test_writer_with_n_1_gives_one_step_transitions_and_rejects_bad_n():
    writer = NStepWriter(1, 0.9, 2)
    out = writer.push(np.array([1.0, 2.0]), np.array([False, True]), np.array([False, True]), first={"x": np.arange(2)})
    assert out.reward.tolist() == [1.0, 2.0] and out.discount.tolist() == [0.9, 0.9] and out.k.tolist() == [1, 1]
    for bad in (0, -2, 1.5):
        with pytest.raises(ValueError, match="n_step must be a whole number >= 1"):
            NStepWriter(bad, 0.9, 1)


def test_restart_ends_the_pending_transitions_at_the_last_step():
    """Environments reset outside the loop (resume without their state): what is pending bootstraps from the
    last s' seen, as at a truncation."""
    storage = TransitionStorage(capacity=10, obs_shape=(2,), obs_dtype=np.float32, population=1, n_step=3, gamma=0.5)
    for t in range(2):
        storage.add(obs_of(t, 0)[None], np.array([t]), np.array([1.0]), obs_of(t + 1, 0)[None], np.array([False]))
    storage.restart_episodes()
    for t in range(2, 5):
        storage.add(obs_of(10 + t, 0)[None], np.array([t]), np.array([1.0]), obs_of(11 + t, 0)[None], np.array([False]))
    batch = storage.gather(np.arange(3)[None])
    assert batch.reward[0].tolist() == [1.5, 1.0, 1.75]
    assert batch.discount[0].tolist() == [0.25, 0.5, 0.125]
    assert batch.next_obs[0, :2, 0].tolist() == [2.0, 2.0] and batch.next_obs[0, 2, 0].item() == 15.0


@pytest.mark.parametrize("lives", [1, 3])
def test_frame_storage_writes_the_same_n_step_transitions_as_whole_transitions(lives):
    """On recorded stacked frames (terminations, truncations, life losses, wrap-around), FrameStorage rebuilds
    exactly the n-step transitions TransitionStorage stores whole."""
    traj = StackedTrajectory(np.random.default_rng(1), population=3, lives=lives)
    frames = Replay(50, 8, lambda **kw: FrameStorage(**kw, n_step=4, gamma=0.9), UniformSampler, (K, H, W), np.uint8,
                    [0, 1, 2])
    whole = Replay(50, 8, lambda **kw: TransitionStorage(**kw, n_step=4, gamma=0.9), UniformSampler, (K, H, W),
                   np.uint8, [0, 1, 2])
    for _ in range(130):
        step = traj.step()
        frames.add(*step)
        whole.add(*step)
    assert frames.storage.added == 127 and len(frames) > 0
    discounts = set()
    for i in range(3):
        slots = np.arange(frames.storage.oldest[i], frames.storage.added) % 50
        got = frames.storage.gather(np.tile(slots, (3, 1)))
        want = whole.storage.gather(np.tile(slots, (3, 1)))
        for field in ("obs", "next_obs", "action", "reward", "terminated", "discount"):
            assert torch.equal(getattr(got, field)[i], getattr(want, field)[i]), (i, field)
        discounts |= set(got.discount[i].tolist())
    assert len(discounts) == 4  # k = 1 .. 4 all occur


def test_frame_storage_restart_ends_pending_transitions_like_transition_storage():
    """A restart (resume without the environments' state) between two recorded trajectories: both storages end
    the pending transitions at the last step and start the next ones afresh."""
    make = lambda storage: Replay(80, 8, lambda **kw: storage(**kw, n_step=3, gamma=0.9), UniformSampler,
                                  (K, H, W), np.uint8, [0, 1])
    frames, whole = make(FrameStorage), make(TransitionStorage)
    for seed in (7, 8):
        traj = StackedTrajectory(np.random.default_rng(seed), population=2, mean_len=8)
        for _ in range(25):
            step = traj.step()
            frames.add(*step)
            whole.add(*step)
        frames.restart_episodes()
        whole.restart_episodes()
    assert frames.storage.added == 48
    slots = np.tile(np.arange(48), (2, 1))
    got, want = frames.storage.gather(slots), whole.storage.gather(slots)
    for field in ("obs", "next_obs", "reward", "terminated", "discount"):
        assert torch.equal(getattr(got, field), getattr(want, field)), field
    assert (got.discount[:, 24] == np.float32(0.9)).all()  # the last step before the restart: k = 1
    assert set(got.discount[:, 23].tolist()) <= {np.float32(0.9).item(), np.float32(0.81).item()}  # k <= 2


def test_frame_storage_n_step_state_dict_round_trip():
    traj = StackedTrajectory(np.random.default_rng(2), population=2)
    make = lambda: Replay(40, 8, lambda **kw: FrameStorage(**kw, n_step=3, gamma=0.9), UniformSampler, (K, H, W),
                          np.uint8, [0, 1])
    a, b = make(), make()
    for _ in range(30):
        a.add(*traj.step())
    b.load_state_dict(a.state_dict())
    for _ in range(20):
        step = traj.step()
        a.add(*step)
        b.add(*step)
        x, y = a.sample(), b.sample()
        for field in ("obs", "next_obs", "reward", "discount"):
            assert torch.equal(getattr(x, field), getattr(y, field))


@pytest.mark.parametrize("storage", [TransitionStorage, FrameStorage])
def test_torch_storage_path_used_on_cuda_equals_the_numpy_path(storage):
    """The device code path (torch indexing, used on CUDA) run on the CPU writes and gathers the same n-step
    transitions."""
    trajs = [StackedTrajectory(np.random.default_rng(6), population=2, mean_len=4, lives=2) for _ in range(2)]
    a, b = (Replay(60, 8, lambda **kw: storage(**kw, n_step=3, gamma=0.9), UniformSampler, (K, H, W), np.uint8,
                   [0, 1]) for _ in range(2))
    b.storage._np = None  # force the torch path
    for _ in range(150):
        a.add(*trajs[0].step())
        b.add(*trajs[1].step())
    for _ in range(5):
        x, y = a.sample(), b.sample()
        for field in ("obs", "action", "reward", "next_obs", "terminated", "discount"):
            assert torch.equal(getattr(x, field), getattr(y, field)), field


# -- the target rule --------------------------------------------------------------------------------------

def test_dqn_target_with_per_sample_discount_by_hand():
    r, term = torch.tensor([[1.0, 0.0, 2.0]]), torch.tensor([[0.0, 1.0, 0.0]])
    discount = torch.tensor([[0.25, 0.5, 0.125]])
    q_next = torch.tensor([[[2.0, 4.0], [5.0, 1.0], [8.0, 0.0]]])
    # 1 + 0.25 * 4 = 2; terminal: 0; 2 + 0.125 * 8 = 3
    assert targets.dqn_target(r, term, discount, q_next).tolist() == [[2.0, 0.0, 3.0]]
    # Double: online picks a' = 0, 0, 1 -> 1 + 0.25 * 2 = 1.5; 0; 2 + 0.125 * 0 = 2
    q_online = torch.tensor([[[9.0, 1.0], [0.0, 0.0], [0.0, 1.0]]])
    assert targets.double_dqn_target(r, term, discount, q_next, q_online).tolist() == [[1.5, 0.0, 2.0]]


@pytest.mark.parametrize("fast_path", [True, False], ids=["numpy", "autograd"])
@pytest.mark.parametrize("rule", [targets.dqn_target, targets.double_dqn_target], ids=["dqn", "double"])
def test_agent_uses_the_batch_discount_in_its_target(fast_path, rule):
    P, B, A = 2, 5, 3
    gens = member_generators([0, 1])
    net = QNetwork(ObservationEncoder((4,)), MLP((4,), gens, (8,)), QHead(8, A, gens))
    agent = DQNAgent(net, torch.optim.Adam(net.parameters(), lr=1e-3, fused=True), rule, gamma=0.99,
                     max_grad_norm=None, fast_path=fast_path)
    assert (agent.fast is not None) == fast_path
    g = torch.Generator().manual_seed(0)
    obs, next_obs = torch.randn(P, B, 4, generator=g), torch.randn(P, B, 4, generator=g)
    action, reward = torch.randint(0, A, (P, B), generator=g), torch.randn(P, B, generator=g)
    terminated = torch.tensor([[0, 1, 0, 0, 0], [0, 0, 0, 1, 0]], dtype=torch.float32)
    discount = torch.tensor([[0.5, 0.25, 0.125, 0.5, 0.25]] * 2)
    with torch.no_grad():
        q_sa = net(obs).gather(-1, action[..., None])[..., 0]
        q_next_t, q_next_o = agent.target_net(next_obs), net(next_obs)
        best = (q_next_o if rule is targets.double_dqn_target else q_next_t).argmax(-1, keepdim=True)
        y = reward + discount * (1 - terminated) * q_next_t.gather(-1, best)[..., 0]
    _, td_error = agent.learn(Batch(obs, action, reward, next_obs, terminated, discount=discount))
    torch.testing.assert_close(td_error, y - q_sa, rtol=1e-6, atol=1e-6)


# -- real runs --------------------------------------------------------------------------------------------

def short(*extra, steps=400):
    return [f"total_steps={steps}", "learning_starts=100", "train_freq=1", "batch_size=16", "buffer_size=1000",
            "eval_every=200", "eval_episodes=2", "log_every=50", "target_sync=hard", "target_sync.every=20",
            "progress=false", "checkpoint_every=0", *extra]


@pytest.mark.parametrize("replay", ["uniform", "prioritized"])
def test_population_member_equals_solo_run(tmp_path, replay):
    pop = train(make_cfg(f"replay={replay}", "n_step=3", *short("seed=5", "n_seeds=3")), tmp_path / "pop", "dqn")
    solo = train(make_cfg(f"replay={replay}", "n_step=3", *short("seed=6", "n_seeds=1")), tmp_path / "solo", "dqn")
    for name, drop in (("returns.csv", ("time",)), ("metrics.csv", ("time", "sps"))):
        rows_pop = [r for r in read_rows(tmp_path / "pop" / name, drop=drop) if r["seed"] == "6"]
        rows_solo = read_rows(tmp_path / "solo" / name, drop=drop)
        assert rows_pop == rows_solo and len(rows_solo) > 5, name
    for p_pop, p_solo in zip(pop.agent.q_net.parameters(), solo.agent.q_net.parameters()):
        assert torch.equal(p_pop[1], p_solo[0])
    assert torch.equal(pop.replay.storage.discount[1], solo.replay.storage.discount[0])


@pytest.mark.parametrize("env", [["env=cartpole"], ["+experiment=minatar", "env.max_episode_steps=100"]],
                         ids=["cartpole", "minatar"])
def test_composed_n_step_configs_train(tmp_path, env):
    parts = train(make_cfg(*env, "n_step=3", *short("n_seeds=2", steps=300)), tmp_path, "dqn")
    assert parts.state.step == 300 and parts.agent.updates == 201
    assert len(parts.replay) == 298  # the last n - 1 steps are still in the writer
    discount = parts.replay.storage.discount[:, :298]
    assert set(discount.unique().tolist()) == {np.float32(0.99 ** k).item() for k in (1, 2, 3)}  # episodes ended
    metrics = pd.read_csv(tmp_path / "metrics.csv")
    assert metrics.loc[metrics.step >= 100, "loss"].notna().all()


def test_a_learner_update_before_the_first_n_step_transition_is_refused():
    from rlzoo.errors import ConfigError
    from rlzoo.train import validate
    validate(make_cfg("n_step=3", "learning_starts=3", "train_freq=1"))
    with pytest.raises(ConfigError, match="n_step=3 .* raise learning_starts to at least 3"):
        validate(make_cfg("n_step=3", "learning_starts=0", "train_freq=2"))
