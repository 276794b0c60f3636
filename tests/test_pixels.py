"""Pixel environments (Atari, MinAtar), the CNN torsos, and smoke runs of every pixel config."""

import math

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from rlzoo.envs.atari import make_atari_env, rom_name
from rlzoo.errors import ConfigError
from rlzoo.replay.frames import FrameReplay
from rlzoo.envs.minatar import make_minatar_env
from rlzoo.nets import DuelingHead, MinAtarCNN, NatureCNN, QHead, member_generators
from rlzoo.train import build, train

TINY = ["total_steps=200", "learning_starts=100", "batch_size=8", "buffer_size=150", "train_freq=4",
        "eval_every=200", "eval_episodes=1", "log_every=100", "progress=false", "device=cpu"]


# -- smoke runs of every pixel config ------------------------------------------------------------
@pytest.mark.parametrize("overrides", [
    ["+experiment=atari_nature", "n_seeds=2", "log_q_estimates=false"],
    ["+experiment=atari_nature", "agent=dueling_double_dqn", "env.id=ALE/Breakout-v5", "env.fire_reset=true"],
    ["env=atari", "network=nature_cnn", "replay=uniform", "agent=double_dqn", "env.max_episode_frames=400"],
    ["+experiment=minatar", "n_seeds=2"],
    ["+experiment=minatar", "agent=dueling_dqn", "env.game=space_invaders"],
    ["env=minatar", "network=minatar_cnn", "agent=double_dqn", "env.game=freeway", "env.max_episode_steps=50"],
], ids=["atari_nature", "atari_dueling_double_breakout", "atari_uniform_replay", "minatar", "minatar_dueling",
        "minatar_env_only"])
def test_pixel_config_trains(cfg_factory, tmp_path, overrides):
    if any("atari" in o for o in overrides):
        overrides = [*overrides, "env.num_threads=1", "eval_every=0"]  # Atari games outlast a 200-step eval
    cfg = cfg_factory(*overrides, *TINY)
    parts = train(cfg, tmp_path, "agent", progress=False)
    P = cfg.n_seeds
    assert parts.state.step == 200
    assert len(parts.replay) == 150
    assert parts.agent.updates == 26  # every 4th step from step 100 to 200
    metrics = pd.read_csv(tmp_path / "metrics.csv")
    assert len(metrics) == 2 * P and np.isfinite(metrics["loss"]).all()
    # parameters moved and stayed finite
    assert all(torch.isfinite(p).all() for p in parts.agent.q_net.parameters())
    batch = parts.replay.sample()
    assert batch.obs.shape == (P, 8, *parts.spec.obs_shape) and batch.obs.dtype == torch.uint8


def test_minatar_episodes_are_logged_with_game_scores(cfg_factory, tmp_path):
    cfg = cfg_factory("+experiment=minatar", *TINY)
    train(cfg, tmp_path, "dqn", progress=False)
    returns = pd.read_csv(tmp_path / "returns.csv")
    train_rows = returns[returns.phase == "train"]
    assert len(train_rows) >= 3 and (train_rows["return"] == train_rows["return"].round()).all()
    assert train_rows.length.sum() <= 200 and (train_rows.env == "MinAtar/breakout").all()


# -- environments --------------------------------------------------------------------------------
def test_rom_names():
    assert rom_name("ALE/Pong-v5") == "pong"
    assert rom_name("ALE/MontezumaRevenge-v5") == "montezuma_revenge"
    assert rom_name("BreakoutNoFrameskip-v4") == "breakout"
    assert rom_name("space_invaders") == "space_invaders"


def test_atari_env_follows_the_deepmind_preprocessing():
    envs, spec = make_atari_env("ALE/Breakout-v5", 2, num_threads=1)
    assert spec.obs_shape == (4, 84, 84) and spec.obs_dtype == np.uint8 and spec.pixels and spec.num_actions == 4
    obs, info = envs.reset(seed=[3, 4])
    assert obs.shape == (2, 4, 84, 84) and obs.dtype == np.uint8
    assert not obs[:, :3].any() and obs[:, 3].any()  # a new game's first stack is zero padded
    nxt, *_ = envs.step(np.zeros(2, dtype=np.int64))
    np.testing.assert_array_equal(nxt[:, :3], obs[:, 1:])  # stacks shift by one frame per step
    envs.close()


def test_atari_member_i_equals_solo_run_with_seed_plus_i():
    pop, _ = make_atari_env("ALE/Pong-v5", 2, num_threads=1)
    solo, _ = make_atari_env("ALE/Pong-v5", 1, num_threads=1)
    a, _ = pop.reset(seed=[10, 11])
    b, _ = solo.reset(seed=[11])
    np.testing.assert_array_equal(a[1], b[0])
    rng = np.random.default_rng(0)
    for _ in range(60):
        act = rng.integers(0, 6, 2)
        a, ra, *_ = pop.step(act)
        b, rb, *_ = solo.step(act[1:])
        np.testing.assert_array_equal(a[1], b[0])
    pop.close(), solo.close()


def test_episodic_life_is_terminal_for_the_learner_but_games_are_whole():
    envs, _ = make_atari_env("ALE/Breakout-v5", 1, episodic_life=True, fire_reset=True, num_threads=1)
    obs, info = envs.reset(seed=[0])
    rng = np.random.default_rng(0)
    life_losses = games = 0
    while games < 1:
        nxt, r, term, trunc, info = envs.step(rng.integers(0, 4, 1))
        if term[0] and not info["game_over"][0]:
            life_losses += 1
            np.testing.assert_array_equal(info["final_obs"][0], nxt[0])  # the game goes on
            np.testing.assert_array_equal(nxt[0, :3], obs[0, 1:])  # so does the stack
        if info["game_over"][0]:
            games += 1
            assert term[0] or trunc[0]
            assert not nxt[0, :3].any()  # a new game
        obs = nxt
    assert life_losses == 4  # Breakout: 5 lives
    envs.close()


def test_loop_logs_whole_games_with_episodic_life(cfg_factory, tmp_path):
    cfg = cfg_factory("+experiment=atari_nature", "env.id=ALE/Breakout-v5", "env.fire_reset=true", "env.num_threads=1",
                      "total_steps=400", "learning_starts=400", "buffer_size=400", "eps_decay_fraction=1.0",
                      "eval_every=0", "log_q_estimates=false", "progress=false", "device=cpu")
    parts = train(cfg, tmp_path, "dqn", progress=False)
    returns = pd.read_csv(tmp_path / "returns.csv")
    terminals = int(parts.replay.storage.terminated.sum())
    assert len(returns) >= 1
    assert terminals >= 5 * len(returns)  # each logged game had 5 lives, each loss a learner terminal
    assert returns.length.min() > 60  # whole games, not single lives


def test_minatar_env():
    envs, spec = make_minatar_env("breakout", 2)
    assert spec.obs_shape == (4, 10, 10) and spec.obs_dtype == np.uint8 and spec.obs_scale == 1.0
    assert spec.num_actions == 6 and spec.pixels
    obs, _ = envs.reset(seed=[5, 6])
    assert set(np.unique(obs)) <= {0, 1} and obs.sum() > 0
    solo, _ = make_minatar_env("breakout", 1)
    b, _ = solo.reset(seed=[6])
    np.testing.assert_array_equal(obs[1], b[0])
    rng = np.random.default_rng(0)
    for _ in range(200):
        act = rng.integers(0, 6, 2)
        obs, r, term, trunc, info = envs.step(act)
        b, rb, tb, *_ = solo.step(act[1:])
        np.testing.assert_array_equal(obs[1], b[0])
        assert r[1] == rb[0] and term[1] == tb[0]
    with pytest.raises(ConfigError, match="space_invaders"):
        make_minatar_env("pong", 1)


def test_minatar_channels_reach_the_network_unscaled(cfg_factory, tmp_path):
    parts = build(cfg_factory("+experiment=minatar", "device=cpu"), tmp_path, "dqn")
    encoder = parts.agent.q_net.encoder
    x = torch.ones(1, 1, 4, 10, 10, dtype=torch.uint8)
    assert torch.equal(encoder(x), torch.ones(1, 1, 4, 10, 10))
    parts.close()


@pytest.mark.parametrize("overrides, words", [
    (["env=atari"], "network=nature_cnn"),  # the default MLP torso cannot take images
    (["env=atari", "network=nature_cnn", "env.id=ALE/NoSuchGame-v5"], "not an Atari game"),
    (["env=atari", "network=nature_cnn", "env.backend=cuda"], "env.backend must be"),
    (["env=cartpole", "network=nature_cnn"], "network=mlp"),
    (["env=minatar", "network=nature_cnn"], "needs larger images"),
    (["env=cartpole", "replay=frames"], "replay=uniform"),
])
def test_pixel_misconfigurations_fail_before_training(cfg_factory, tmp_path, overrides, words):
    with pytest.raises(ConfigError, match=words):
        build(cfg_factory(*overrides, "device=cpu"), tmp_path, "dqn")


# -- networks ------------------------------------------------------------------------------------
def reference_cnn(torso, member: int) -> nn.Sequential:
    """A plain torch CNN with member ``member``'s weights."""
    layers = []
    for conv in torso.convs:
        c = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride)
        c.weight.data.copy_(conv.weight[member]), c.bias.data.copy_(conv.bias[member])
        layers += [c, nn.ReLU()]
    layers.append(nn.Flatten())
    for fc in torso.fcs:
        lin = nn.Linear(fc.in_features, fc.out_features)
        lin.weight.data.copy_(fc.weight[member]), lin.bias.data.copy_(fc.bias[member, 0])
        layers += [lin, nn.ReLU()]
    return nn.Sequential(*layers)


@pytest.mark.parametrize("cls, shape, out", [(NatureCNN, (4, 84, 84), 512), (MinAtarCNN, (4, 10, 10), 128)])
def test_cnn_torso_equals_per_member_torch_cnns(cls, shape, out):
    torso = cls(shape, member_generators([0, 1, 2]))
    assert torso.out_features == out
    assert all(p.shape[0] == 3 for p in torso.parameters())  # member axis first
    x = torch.rand(3, 5, *shape)
    y = torso(x)
    assert y.shape == (3, 5, out)
    for i in range(3):
        torch.testing.assert_close(y[i], reference_cnn(torso, i)(x[i]), rtol=1e-4, atol=1e-5)


def test_nature_cnn_layer_sizes_and_torch_default_init_range():
    torso = NatureCNN((4, 84, 84), member_generators([0]))
    assert [tuple(c.weight.shape[1:]) for c in torso.convs] == [(32, 4, 8, 8), (64, 32, 4, 4), (64, 64, 3, 3)]
    assert torso.fcs[0].weight.shape == (1, 512, 64 * 7 * 7)
    for c in torso.convs:
        bound = 1 / math.sqrt(c.weight[0, 0].numel())
        assert c.weight.abs().max() <= bound and c.weight.abs().max() > 0.9 * bound


def test_population_member_equals_solo_network_and_gradients_stay_per_member():
    pop = MinAtarCNN((4, 10, 10), member_generators([7, 8]))
    solo = MinAtarCNN((4, 10, 10), member_generators([8]))
    for p, s in zip(pop.parameters(), solo.parameters()):
        torch.testing.assert_close(p[1], s[0])
    x = torch.rand(2, 3, 4, 10, 10)
    torch.testing.assert_close(pop(x)[1], solo(x[1:])[0])
    pop(x)[0].sum().backward()  # a loss on member 0 only
    assert all(p.grad[1].abs().sum() == 0 and p.grad[0].abs().sum() > 0 for p in pop.parameters())


@pytest.mark.parametrize("head_cls", [QHead, DuelingHead])
def test_heads_on_cnn_torsos(head_cls):
    gens = member_generators([0, 1])
    torso = NatureCNN((4, 84, 84), gens)
    head = head_cls(torso.out_features, 6, gens)
    q = head(torso(torch.rand(2, 3, 4, 84, 84)))
    assert q.shape == (2, 3, 6)
    if head_cls is DuelingHead:  # Q = V + A - mean(A) on CNN features
        features = torso(torch.rand(2, 3, 4, 84, 84))
        v, a = head.streams(features)
        torch.testing.assert_close(head(features), v + a - a.mean(-1, keepdim=True))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_frame_replay_on_cuda_matches_cpu():
    rng = np.random.default_rng(0)
    cpu = FrameReplay(50, 4, (4, 8, 8), np.uint8, [0, 1])
    gpu = FrameReplay(50, 4, (4, 8, 8), np.uint8, [0, 1], device="cuda")
    obs = np.zeros((2, 4, 8, 8), np.uint8)
    obs[:, -1] = 1
    for t in range(120):
        nxt = np.concatenate([obs[:, 1:], rng.integers(1, 255, (2, 1, 8, 8), dtype=np.uint8)], axis=1)
        done = np.array([t % 7 == 6, t % 11 == 10])
        for r in (cpu, gpu):
            r.add(obs, rng.integers(0, 4, 2) * 0, np.ones(2), nxt, done, np.zeros(2, bool))
        obs = np.where(done[:, None, None, None], np.concatenate([np.zeros((2, 3, 8, 8), np.uint8), nxt[:, -1:]], 1), nxt)
    assert gpu.storage.frames.is_cuda
    a, b = cpu.sample(), gpu.sample()
    assert np.array_equal(a.indices, b.indices) and a.weights is None and b.weights is None
    for x, y in zip(a[:5], b[:5]):
        torch.testing.assert_close(x, y.cpu())
