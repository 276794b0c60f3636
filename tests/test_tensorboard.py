"""``tensorboard=true`` writes the CSVs' scalars as TensorBoard events as well (never instead): read back with
TensorBoard's EventAccumulator, they equal the rows of returns.csv and metrics.csv."""

from __future__ import annotations

import csv

import pytest

from rlzoo.train import train
from conftest import make_cfg

pytest.importorskip("tensorboard")
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402


def rows(path, **match):
    with open(path, newline="") as f:
        return [r for r in csv.DictReader(f) if all(r[k] == v for k, v in match.items())]


def test_tensorboard_events_equal_the_csvs(tmp_path):
    cfg = make_cfg("seed=2", "n_seeds=2", "total_steps=500", "learning_starts=100", "eval_every=250",
                   "eval_episodes=2", "log_every=100", "batch_size=16", "buffer_size=1000", "progress=false",
                   "checkpoint_every=0", "tensorboard=true")
    train(cfg, tmp_path, "dqn", progress=False)
    assert (tmp_path / "returns.csv").exists() and (tmp_path / "metrics.csv").exists()  # alongside, not instead
    for seed in ("2", "3"):
        acc = EventAccumulator(str(tmp_path / "tensorboard" / f"seed{seed}"), size_guidance={"scalars": 0})
        acc.Reload()
        tags = set(acc.Tags()["scalars"])
        assert {"train/return", "train/length", "eval/return", "metrics/loss", "metrics/epsilon"} <= tags

        def same(tag, expected, rel=1e-6):  # TensorBoard stores float32
            got = acc.Scalars(tag)
            assert [e.step for e in got] == [step for step, _ in expected], tag
            assert [e.value for e in got] == pytest.approx([v for _, v in expected], rel=rel), tag

        for phase in ("train", "eval"):
            csv_rows = rows(tmp_path / "returns.csv", seed=seed, phase=phase)
            assert len(csv_rows) > 1
            for column in ("return", "length"):
                expected = [(int(r["step"]), float(r[column])) for r in csv_rows]
                same(f"{phase}/{column}", expected)
        metric_rows = rows(tmp_path / "metrics.csv", seed=seed)
        assert len(metric_rows) == 5
        for column in ("loss", "epsilon", "updates", "q_mean"):
            expected = [(int(r["step"]), float(r[column])) for r in metric_rows if r[column] != ""]
            same(f"metrics/{column}", expected)


def test_no_tensorboard_by_default(tmp_path):
    cfg = make_cfg("total_steps=200", "learning_starts=100", "eval_every=0", "progress=false", "checkpoint_every=0")
    train(cfg, tmp_path, "dqn", progress=False)
    assert not (tmp_path / "tensorboard").exists()
