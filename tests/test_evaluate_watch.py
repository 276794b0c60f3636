"""Saved models, ``python -m rlzoo.evaluate`` and ``python -m rlzoo.watch``: the model files hold the trained
networks; evaluating them with a training evaluation's random streams repeats that evaluation exactly; the
animations have the expected number of frames."""

from __future__ import annotations

import csv
import math
import subprocess
import sys
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from rlzoo import evaluate as evaluate_mod
from rlzoo.errors import ConfigError
from rlzoo.io import models
from rlzoo.train import train
from rlzoo.watch import CHANNEL_COLOURS, draw_cartpole, draw_grid, watch_run
from conftest import make_cfg

STEPS = 600
DQN = ["seed=3", "n_seeds=2", f"total_steps={STEPS}", "learning_starts=100", "eps_decay_fraction=0.5",
       "eval_every=200", "eval_episodes=2", "log_every=100", "batch_size=16", "buffer_size=1000", "progress=false",
       "checkpoint_every=0"]


def trained(path: Path, *overrides: str, agent: str = "dqn"):
    """A finished run in ``path`` with its composed config in ``.hydra/config.yaml``, as Hydra writes it."""
    cfg = make_cfg(*overrides)
    run = train(cfg, path, agent, progress=False)
    (path / ".hydra").mkdir(parents=True, exist_ok=True)
    OmegaConf.save(cfg, path / ".hydra" / "config.yaml")
    return run


def eval_means(run_dir: Path, phase: str = "eval") -> dict:
    """``{(seed, step): mean return}`` of the ``phase`` rows."""
    out = {}
    with open(run_dir / "returns.csv", newline="") as f:
        for row in csv.DictReader(f):
            if row["phase"] == phase:
                out.setdefault((int(row["seed"]), int(row["step"])), []).append(float(row["return"]))
    return {k: float(np.mean(v)) for k, v in out.items()}


@pytest.fixture(scope="module")
def dqn_run(tmp_path_factory):
    path = tmp_path_factory.mktemp("dqn")
    return path, trained(path, *DQN)


def test_final_model_holds_the_trained_network(dqn_run):
    path, run = dqn_run
    tensors, meta = models.load(path / "models" / "final.safetensors")
    q_net = run.agent.state_dict()["q_net"]
    assert set(tensors) == {f"q_net.{k}" for k in q_net}
    for k, v in q_net.items():
        assert torch.equal(tensors[f"q_net.{k}"], v), k  # bit for bit, member axis first
    assert meta["seeds"] == [3, 4] and meta["steps"] == [STEPS, STEPS] and meta["kind"] == "final"
    assert meta["agent"] == "dqn" and meta["env"] == "CartPole-v1"


def test_best_model_is_each_members_best_evaluation(dqn_run):
    path, _ = dqn_run
    _, meta = models.load(path / "models" / "best.safetensors")
    means = eval_means(path)
    for i, seed in enumerate((3, 4)):
        steps = sorted(step for s, step in means if s == seed)
        best = max(means[(seed, st)] for st in steps)
        first_best = min(st for st in steps if means[(seed, st)] == best)  # ties: the earliest
        assert meta["eval_mean"][i] == pytest.approx(best) and meta["steps"][i] == first_best


@pytest.mark.parametrize("model", ["final", "best"])
def test_evaluate_repeats_a_training_evaluation(dqn_run, monkeypatch, model):
    """With the random streams of the evaluation at step s (seed=s, no offset), evaluating the model saved at
    step s repeats that evaluation's returns exactly."""
    path, _ = dqn_run
    _, meta = models.load(path / "models" / f"{model}.safetensors")
    monkeypatch.setattr(evaluate_mod, "POSTHOC", 0)
    means = eval_means(path)
    for i, seed in enumerate(meta["seeds"]):
        step = meta["steps"][i]
        out = evaluate_mod.evaluate_run(path, episodes=2, member=str(i), model=model, seed=step, append=False)
        assert np.mean([r for r, _ in out[seed]]) == means[(seed, step)]


def test_member_alone_equals_member_in_population(dqn_run):
    path, _ = dqn_run
    both = evaluate_mod.evaluate_run(path, episodes=3, epsilon=0.1, seed=1, append=False)
    alone = evaluate_mod.evaluate_run(path, episodes=3, epsilon=0.1, member="1", seed=1, append=False)
    assert alone[4] == both[4] and len(both[4]) == 3


def test_evaluate_appends_marked_rows_that_analysis_keeps_apart(tmp_path, dqn_run, capsys):
    import shutil
    import analysis.load as load
    path = tmp_path / "run"
    shutil.copytree(dqn_run[0], path)
    before = (path / "returns.csv").read_text().count("\n")
    out = evaluate_mod.evaluate_run(path, episodes=4, epsilon=0.05, member="0", seed=7)
    text = capsys.readouterr().out
    assert "+-" in text and "appended 4 rows" in text
    with open(path / "returns.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    new = rows[before - 1:]
    assert len(new) == 4 and all(r["phase"] == "evaluate" for r in new)
    assert {r["protocol"] for r in new} == {"model=final episodes=4 epsilon=0.05 seed=7"}
    assert [float(r["return"]) for r in new] == [r for r, _ in out[3]]
    assert all(r["protocol"] == "" for r in rows[:before - 1])  # training rows
    df = load.load_returns([path])
    assert set(df["phase"]) == {"train", "eval"} and len(df) == before - 1  # curves never mix them in


def test_evaluate_adds_the_protocol_column_to_an_older_file(tmp_path, dqn_run):
    import shutil
    path = tmp_path / "old"
    shutil.copytree(dqn_run[0], path)
    lines = (path / "returns.csv").read_text().splitlines()
    old = [line.rsplit(",", 1)[0] for line in lines]  # as rlzoo wrote it before the protocol column
    (path / "returns.csv").write_text("\n".join(old) + "\n")
    evaluate_mod.evaluate_run(path, episodes=1, member="0")
    with open(path / "returns.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert rows[-1]["protocol"].startswith("model=final") and rows[0]["protocol"] in ("", None)
    assert len(rows) == len(lines)


@pytest.mark.parametrize("args, words", [
    (["member=2"], ["member", "0..1"]), (["model=latest"], ["model", "final", "best"]),
    (["episodes=0"], ["episodes", ">= 1"]), (["epsilon=2"], ["epsilon"]), (["foo=1"], ["foo", "episodes="]),
    (["episodes=many"], ["episodes", "int"])])
def test_evaluate_bad_input(dqn_run, args, words):
    with pytest.raises(ConfigError) as e:
        run_dir, kw = evaluate_mod.parse_args([str(dqn_run[0]), *args, "append=false"], evaluate_mod.DEFAULTS, "")
        evaluate_mod.evaluate_run(run_dir, **kw)
    assert all(w in str(e.value) for w in words), str(e.value)


def test_evaluate_cli_not_a_run(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "rlzoo.evaluate", str(tmp_path)], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and ".hydra/config.yaml" in proc.stderr


# -- watch ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("every", [1, 3])
def test_watch_gif_has_a_frame_per_kept_step(dqn_run, tmp_path, every):
    path, _ = dqn_run
    out = watch_run(path, out=str(tmp_path / "a.gif"), episodes=2, member=1, every=every, max_steps=25, height=96)
    frames = iio.imread(out["path"], index=None)
    assert out["steps"] <= 50 and frames.shape[0] == math.ceil(out["steps"] / every) == out["frames"]
    assert frames.shape[1] == 96 and frames.shape[2] % 16 == 0 and frames.shape[3] in (3, 4)


def test_watch_mp4(dqn_run, tmp_path):
    pytest.importorskip("imageio_ffmpeg")
    import imageio.v2 as iio2
    out = watch_run(dqn_run[0], out=str(tmp_path / "a.mp4"), max_steps=20, height=96)
    with iio2.get_reader(out["path"], format="FFMPEG") as reader:
        n = reader.count_frames()
        first = reader.get_data(0)
    assert n == out["frames"] == out["steps"] and first.shape[0] == 96


def test_watch_minatar_and_gymnasium_rendering(tmp_path):
    minatar = tmp_path / "minatar"
    trained(minatar, "+experiment=minatar", "env.game=breakout", "total_steps=60", "learning_starts=30",
            "buffer_size=100", "progress=false", "checkpoint_every=0")
    out = watch_run(minatar, out=str(tmp_path / "m.gif"), max_steps=15, height=80)
    assert iio.imread(out["path"], index=None).shape[0] == out["frames"] == out["steps"]
    pytest.importorskip("pygame")  # gymnasium's FrozenLake draws with pygame
    lake = tmp_path / "lake"
    trained(lake, "agent=qtable", "env=frozenlake", "total_steps=200", "learning_starts=1", "train_freq=1",
            "replay.capacity=1", "replay.batch_size=1", "eval_every=100", "eval_episodes=1", "progress=false",
            "checkpoint_every=0", agent="qtable")
    out = watch_run(lake, out=str(tmp_path / "l.gif"), max_steps=10, height=64, epsilon=1.0)
    assert iio.imread(out["path"], index=None).shape[0] == out["frames"] == out["steps"]


def test_cartpole_drawing_follows_the_pole():
    upright, tilted = draw_cartpole([0, 0, 0, 0], 120), draw_cartpole([0, 0, 0.2, 0], 120)
    w = upright.shape[1]
    track = int(120 * 0.72)
    above = upright[track - 30, w // 2 - 2:w // 2 + 3]  # straight above the cart's centre: the pole
    assert (above == (202, 152, 101)).all(axis=-1).any()
    assert not (tilted[track - 30, w // 2 - 2:w // 2 + 3] == (202, 152, 101)).all(axis=-1).any()
    left = draw_cartpole([-1.0, 0, 0, 0], 120)
    cart_cols = np.flatnonzero((left[track] == (40, 40, 40)).all(axis=-1))
    assert cart_cols.mean() < w / 2 - 0.9 * (w / 4.8 / 1.1)  # the cart is drawn 1.0 world units left


def test_minatar_grid_colours():
    obs = np.zeros((3, 10, 10), dtype=np.uint8)
    obs[0, 1, 2] = obs[2, 9, 9] = 1
    rgb = draw_grid(obs, 100)
    assert rgb.shape == (100, 100, 3)
    assert (rgb[15, 25] == CHANNEL_COLOURS[0]).all() and (rgb[95, 95] == CHANNEL_COLOURS[2]).all()
    assert (rgb[55, 55] == 0).all()


def test_watch_bad_input(dqn_run):
    with pytest.raises(ConfigError, match="out must end in .gif or .mp4"):
        watch_run(dqn_run[0], out="agent.avi")
    with pytest.raises(ConfigError, match="every must be >= 1"):
        watch_run(dqn_run[0], every=0)
