"""analysis/rainbow.py (the report's Rainbow ablation) on crafted runs whose effects are known, its classification of
the committed reference runs, and the short labels of runs told apart by a config-group choice."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from analysis import rainbow, report
from analysis.load import load_returns, run_identity
from test_report import population

ROOT = Path(__file__).resolve().parents[1]
FULL = {"agent.double": True, "agent.dueling": True, "agent.distributional": True,
        "agent.head.layer._target_": "rlzoo.nets.PopNoisyLinear", "n_step": 3,
        "replay.sampler._target_": "rlzoo.replay.PrioritizedSampler"}
# what each `+ablation=` choice changes in the resolved configuration
OFF = {"no_double": {"agent.double": False}, "no_dueling": {"agent.dueling": False},
       "no_distributional": {"agent.distributional": False}, "no_noisy": {"agent.head.layer._target_": None},
       "no_multistep": {"n_step": 1}, "no_prioritized": {"replay.sampler._target_": "rlzoo.replay.UniformSampler"}}


def rainbow_run(run_dir: Path, scores, ablation: str, env: str = "CartPole-v1", extra: dict | None = None,
                overrides=()) -> Path:
    config = {**FULL, **OFF.get(ablation, {}), **(extra or {})}
    config = {k: v for k, v in config.items() if v is not None}
    population(run_dir, scores, agent="rainbow", overrides=[f"+ablation={ablation}", *overrides], env=env,
               config=config)
    # a group choice is not a key of the resolved configuration (the synthetic writer applies every override);
    # neither is an execution key such as `progress`
    cfg = run_dir / ".hydra/config.yaml"
    cfg.write_text(yaml.safe_dump({k: v for k, v in yaml.safe_load(cfg.read_text()).items()
                                   if k not in ("ablation", "progress")}))
    return run_dir


def test_components_off_classifies_every_committed_cartpole_variant():
    base = ROOT / "results/reference/rainbow_ablation_cartpole"
    dirs = sorted(p for p in base.iterdir() if p.is_dir())
    assert len(dirs) == 7
    want = {"none": (), "no_double": ("double",), "no_dueling": ("dueling",),
            "no_distributional": ("distributional",), "no_noisy": ("noisy",), "no_multistep": ("multistep",),
            "no_prioritized": ("prioritized",)}
    for d in dirs:
        assert rainbow.components_off(run_identity(d)[0]) == want[d.name.split("_", 1)[1]], d


def test_each_component_effect_is_the_difference_of_final_returns(tmp_path):
    rng = np.random.default_rng(0)
    full = rng.normal(400, 5, 5)
    drops = {"no_multistep": 150.0, "no_distributional": 80.0, "no_double": 0.0, "no_dueling": 0.0,
             "no_noisy": 0.0, "no_prioritized": -30.0}
    rainbow_run(tmp_path / "none", full, "none")
    scores = {}
    for ablation, drop in drops.items():
        scores[ablation] = rng.normal(400 - drop, 5, 5)
        rainbow_run(tmp_path / ablation, scores[ablation], ablation)
    # ignored: two components off at once; a full agent with another learning rate (no variant to match it);
    # Rainbow on another testbed
    rainbow_run(tmp_path / "two_off", full - 300, "two", extra={"n_step": 1, "agent.double": False})
    rainbow_run(tmp_path / "other_lr", full - 300, "none", extra={"lr": 0.5})
    rainbow_run(tmp_path / "minatar", full - 300, "no_noisy", env="MinAtar/space_invaders")
    cartpole, minatar = rainbow.report_claims()
    ev = cartpole.evaluate(report.Runs([tmp_path]), tmp_path / "out", {})
    per = {name: full.mean() - scores[f"no_{name}"].mean() for name in rainbow.NAMES}
    assert ev.effect.estimate == pytest.approx(np.mean(list(per.values())))
    assert ev.effect.verdict == "reproduced" and ev.effect.sign == +1
    rows = {line.split(" | ")[2]: line for line in ev.table.splitlines()[2:]}
    assert set(rows) == {"Rainbow", *(f"minus {n}" for n in rainbow.NAMES.values())}
    assert f"| {per['multistep']:.1f} [" in rows["minus multi-step returns"]
    assert "| reproduced | 2 |" in rows["minus multi-step returns"]            # Hessel et al.'s rank: 2
    assert "| inconclusive | 6 |" in rows["minus Double Q-learning"]
    assert "| not reproduced | 1 |" in rows["minus prioritized replay"]         # removing it helped here
    assert ev.notes[0].startswith("Measured order of the components, largest drop first: multi-step returns (+")
    assert [p.name for p in ev.figures] == ["rainbow_ablation_cartpole.png", "rainbow_ablation_cartpole_effects.png"]
    assert all(p.exists() for p in ev.figures)
    # only one MinAtar run and no full agent there: nothing to report
    assert minatar.evaluate(report.Runs([tmp_path]), tmp_path / "out", {}) is None


def test_the_mean_drop_resamples_the_shared_full_agent_once_per_replicate():
    full = np.array([10.0, 10.0, 10.0])
    minus = [np.array([4.0, 6.0, 8.0]), np.array([10.0, 10.0, 10.0])]
    est, lo, hi = rainbow.ablation_bootstrap(full, minus, reps=500)
    assert est == pytest.approx(((10 - 6) + 0) / 2)
    assert 1.0 <= lo <= est <= hi <= 3.0          # half of the first difference's range [2, 6]
    # no difference anywhere: a zero-width interval at 0
    assert rainbow.ablation_bootstrap(full, [full, full], reps=100) == (0.0, 0.0, 0.0)


def test_runs_told_apart_by_a_group_choice_are_labelled_by_it(tmp_path):
    for ablation in ("none", "no_noisy", "no_multistep"):
        rainbow_run(tmp_path / ablation, [1.0, 2.0], ablation)
    labels = dict(load_returns([tmp_path]).drop_duplicates("run_dir")[["run_dir", "label"]].itertuples(index=False))
    assert sorted(labels.values()) == ["rainbow [ablation=no_multistep]", "rainbow [ablation=no_noisy]",
                                       "rainbow [ablation=none]"]
    # a key the choice does not determine stays in the label (two runs of one choice, two learning rates)
    rainbow_run(tmp_path / "no_noisy_lr", [1.0, 2.0], "no_noisy", extra={"lr": 0.5})
    labels = dict(load_returns([tmp_path]).drop_duplicates("run_dir")[["run_dir", "label"]].itertuples(index=False))
    assert labels[str(tmp_path / "no_noisy_lr")] == "rainbow [ablation=no_noisy, lr=0.5]"
    assert labels[str(tmp_path / "no_noisy")] == "rainbow [ablation=no_noisy, lr=0.001]"
    assert labels[str(tmp_path / "none")] == "rainbow [ablation=none, lr=0.001]"


def test_an_execution_key_on_the_command_line_is_not_a_choice(tmp_path):
    """`progress=False` in one run and `progress=false` in another are no config-group choice, even where their
    values line up with a key that differs: the label shows the key."""
    population(tmp_path / "a", [1.0, 2.0], overrides=["progress=False"])
    population(tmp_path / "b", [1.0, 2.0], overrides=["progress=false"], config={"lr": 0.5})
    labels = dict(load_returns([tmp_path]).drop_duplicates("run_dir")[["run_dir", "label"]].itertuples(index=False))
    assert labels == {str(tmp_path / "a"): "dqn [lr=0.001]", str(tmp_path / "b"): "dqn [lr=0.5]"}
