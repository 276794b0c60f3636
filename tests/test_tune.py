"""rlzoo.tune: the objective (area under the evaluation curve) on hand-computed rows, the search space, bad input,
and a tiny real tuning run of two agents that is then run again and does nothing twice."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

optuna = pytest.importorskip("optuna", reason="rlzoo.tune needs Optuna: pip install -e '.[tune]'")

from rlzoo import tune  # noqa: E402
from rlzoo.errors import ConfigError  # noqa: E402

HEADER = ["agent", "env", "seed", "phase", "step", "episode", "return", "length", "truncated", "q_estimate",
          "mc_return", "time"]


def write_returns(path: Path, rows: list[tuple]) -> None:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(HEADER)
        for seed, phase, step, ret in rows:
            w.writerow(["dqn", "CartPole-v1", seed, phase, step, 0, ret, 10, False, "", "", 0.0])


def test_evaluation_area_is_the_mean_of_each_evaluations_mean_return(tmp_path):
    write_returns(tmp_path / "returns.csv", [
        (0, "train", 50, 1000.0),                      # training episodes do not count
        (0, "eval", 100, 10.0), (0, "eval", 100, 20.0),  # evaluation at step 100: mean 15
        (0, "eval", 200, 30.0),                         # at step 200: 30 -> area 22.5
        (1, "eval", 100, 5.0), (1, "eval", 200, 6.0), (1, "eval", 200, 8.0),  # 5 and 7 -> 6
    ])
    assert tune.evaluation_areas(tmp_path / "returns.csv") == {0: 22.5, 1: 6.0}
    assert tune.objective_value(tmp_path, [0, 1]) == pytest.approx(14.25)
    with pytest.raises(RuntimeError, match=r"no evaluation of seed\(s\) \[2\]"):
        tune.objective_value(tmp_path, [0, 2])


def test_the_space_is_sampled_within_its_ranges_and_with_its_types():
    space = tune.load_space(tune.DEFAULT_SPACE)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(30):
        params = tune.suggest(study.ask(), space)
        assert 1e-4 <= params["lr"] <= 3e-3 and isinstance(params["lr"], float)
        assert params["batch_size"] in (32, 64, 128) and params["train_freq"] in (1, 2, 4)
        assert 50 <= params["target_sync.every"] <= 1000 and isinstance(params["target_sync.every"], int)
    assert tune.as_overrides({"lr": 0.001, "target_sync.every": 7}) == ["lr=0.001", "target_sync.every=7"]


@pytest.mark.parametrize("argv, words", [
    (["trials=0"], "trials must be a whole number >= 1, got '0'"),
    (["agent=dqn"], "agent is set by the tuner for each run: use agents=a,b,..."),
    (["n_seeds=4"], "n_seeds is set by the tuner"),
    (["agents="], "agents must be a comma-separated list"),
    (["agents=dqn,dqn"], "agents must name each agent once"),
    (["seeds=5", "final_seed=3"], "final_seed=3 makes the final runs reuse tuning seeds 0..4"),
    (["lr"], "arguments are key=value"),
])
def test_bad_arguments_are_one_sentence(argv, words):
    with pytest.raises(ConfigError, match=words.replace("(", r"\(").replace(")", r"\)").replace(".", r"\.")):
        tune.parse_args(argv)


def test_bad_space_and_bad_overrides_stop_before_any_run(tmp_path, capsys):
    bad = tmp_path / "space.yaml"
    bad.write_text("lr: {low: 0.01, high: 0.001}\n")
    with pytest.raises(ConfigError, match="space key lr .* must be .*low < high"):
        tune.load_space(str(bad))
    bad.write_text("no_such_key: {choices: [1, 2]}\n")
    assert tune.main([f"space={bad}", f"out={tmp_path / 'o'}", "total_steps=2000"]) == 2
    assert "space key no_such_key is not a key of agent=dqn's config" in capsys.readouterr().err
    assert tune.main([f"out={tmp_path / 'o'}", "target_sync=soft"]) == 2  # the default space tunes target_sync.every
    assert "space key target_sync.every is not a key of agent=dqn's config" in capsys.readouterr().err
    assert tune.main([f"out={tmp_path / 'o'}", "target_sync=hard", "eval_every=0"]) == 2
    assert "eval_every must be between 1 and total_steps" in capsys.readouterr().err
    assert not (tmp_path / "o" / "trials").exists()


TINY_SPACE = "lr: {low: 1.0e-4, high: 1.0e-2, log: true}\ntarget_sync.every: {choices: [10, 100]}\n"
TINY = ["agents=dqn,double_dqn", "trials=2", "seeds=2", "final_seeds=2", "final_seed=50", "jobs=2", "target_sync=hard",
        "total_steps=300", "learning_starts=100", "eval_every=150", "eval_episodes=1", "log_every=100",
        "buffer_size=500", "batch_size=32", "checkpoint_every=150"]


def test_a_tiny_tuning_run_tunes_each_agent_alike_and_a_rerun_does_nothing_twice(tmp_path):
    space = tmp_path / "space.yaml"
    space.write_text(TINY_SPACE)
    out = tmp_path / "tuning"
    argv = [*TINY, f"space={space}", f"out={out}"]
    assert tune.main(argv) == 0
    storage = f"sqlite:///{out / 'optuna.db'}"
    studies = {a: optuna.load_study(study_name=a, storage=storage) for a in ("dqn", "double_dqn")}
    for agent, study in studies.items():
        trials = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
        assert len(trials) == 2
        for t in trials:  # each objective is the mean evaluation area of the trial's two members (seeds 0, 1)
            areas = tune.evaluation_areas(Path(t.user_attrs["run_dir"]) / "returns.csv")
            assert set(areas) == {0, 1} and t.value == pytest.approx((areas[0] + areas[1]) / 2)
    # the same start-up configurations for both agents (queued, so the two parallel trials cannot change them)
    assert sorted(str(t.params) for t in studies["dqn"].trials) == sorted(str(t.params) for t in studies["double_dqn"].trials)
    with open(out / "comparison.csv", newline="") as f:
        rows = {r["agent"]: r for r in csv.DictReader(f)}
    assert set(rows) == {"dqn", "double_dqn"}
    for agent, row in rows.items():
        finals = tune.evaluation_areas(out / "final" / agent / "returns.csv")
        assert set(finals) == {50, 51}  # fresh seeds
        assert float(row["final_objective"]) == pytest.approx(sum(finals.values()) / 2, abs=0.01)
        assert float(row["tuning_objective"]) == pytest.approx(studies[agent].best_value, abs=0.01)
    # analysis/ reads the final runs, one label per agent
    from analysis.load import load_returns
    labels = set(load_returns([out / "final"])["label"])
    assert labels == {"dqn", "double_dqn"}

    # Run again: every agent has its trials and a complete final run, so nothing is trained again.
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("returns.csv")}
    assert tune.main(argv) == 0
    assert {p: p.stat().st_mtime_ns for p in out.rglob("returns.csv")} == stamps
    assert all(len(optuna.load_study(study_name=a, storage=storage).trials) == 2 for a in studies)


def test_a_study_made_with_other_settings_is_not_continued(tmp_path):
    s, overrides = tune.parse_args(["agents=dqn", f"out={tmp_path}", "total_steps=2000"])
    space = tune.load_space(tune.DEFAULT_SPACE)
    study = optuna.create_study(study_name="dqn", storage=f"sqlite:///{tmp_path / 'optuna.db'}", direction="maximize")
    study.set_user_attr("settings", '{"overrides": ["total_steps=5000"]}')
    with pytest.raises(ConfigError, match="made with other settings .*total_steps=5000"):
        tune.tune_agent("dqn", s, overrides, space, tmp_path)
    assert not (tmp_path / "trials").exists()
