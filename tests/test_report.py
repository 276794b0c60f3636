"""analysis/report.py: the verdict rule, matched strata, planted effects on synthetic runs, plug-in claims, and
the report on the committed reference runs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from analysis import report
from analysis.report import Arm, Comparison, Effect, Evidence, verdict, write_report
from test_analysis import write_run

ROOT = Path(__file__).resolve().parents[1]
STEPS = [100, 200, 300, 400, 500]


def population(run_dir: Path, scores, agent="dqn", overrides=(), env="Toy-v0", config=None) -> Path:
    """A population whose seed i scores scores[i] in every evaluation."""
    seeds = list(range(len(scores)))
    return write_run(run_dir, agent, seeds, {s: list(scores) for s in STEPS}, total_steps=STEPS[-1],
                     overrides=["agent=" + agent, *overrides], env=env, config=config)


def test_verdict_rule():
    assert verdict(5.0, 1.0, 9.0, +1) == "reproduced"
    assert verdict(5.0, 1.0, 9.0, -1) == "not reproduced"
    assert verdict(-5.0, -9.0, -1.0, -1) == "reproduced"
    assert verdict(1.0, -1.0, 3.0, +1) == "inconclusive"
    assert verdict(5.0, 1.0, 9.0, +1, enough_seeds=False) == "inconclusive"
    assert verdict(np.nan, np.nan, np.nan, +1) == "inconclusive"


def test_planted_effect_is_reproduced_and_no_effect_is_inconclusive(tmp_path):
    rng = np.random.default_rng(0)
    planted, null = tmp_path / "planted", tmp_path / "null"
    population(planted / "target", rng.normal(400, 20, 6))
    population(planted / "no_target", rng.normal(12, 2, 6), overrides=["target_sync.every=1"])
    same = rng.normal(200, 40, 6)  # no effect: the same scores, seeds in another order
    population(null / "target", same)
    population(null / "no_target", same[::-1], overrides=["target_sync.every=1"])

    path, results, figures = write_report([planted], tmp_path / "out_planted")
    by_key = {r["key"]: r for r in results}
    r = by_key["target_network"]
    assert r["verdict"] == "reproduced" and r["lo"] > 300
    for key in ("qtable_small_states", "dqn_generalises", "experience_replay", "double_overestimation"):
        assert by_key[key]["verdict"] == "no runs given"
    text = path.read_text()  # every other claim (plug-ins included) has no runs here
    assert "**Verdict: reproduced.**" in text and text.count("**Verdict: no runs given**") == len(results) - 1
    assert (tmp_path / "out_planted" / "target_network.png").exists() and figures

    _, results, _ = write_report([null], tmp_path / "out_null", claims=[c for c in report.CLAIMS
                                                                        if c.key == "target_network"])
    assert results[0]["verdict"] == "inconclusive" and results[0]["lo"] < 0 < results[0]["hi"]
    assert results[0]["effect"] == pytest.approx(0.0, abs=1e-9)

    # the other direction: the ablated agent clearly better
    flipped = tmp_path / "flipped"
    population(flipped / "target", rng.normal(50, 5, 6))
    population(flipped / "no_target", rng.normal(300, 5, 6), overrides=["target_sync.every=1"])
    _, results, _ = write_report([flipped], tmp_path / "out_flipped", claims=[c for c in report.CLAIMS
                                                                             if c.key == "target_network"])
    assert results[0]["verdict"] == "not reproduced"


def test_effect_is_the_difference_of_means_averaged_over_matched_strata(tmp_path):
    # Two strata (replay on, replay off): target minus no target is 100 in one and 20 in the other -> 60.
    # A run that matches neither (another learning rate) is not paired with anything.
    population(tmp_path / "full", [300.0, 300.0])
    population(tmp_path / "no_target", [200.0, 200.0], overrides=["target_sync.every=1"])
    population(tmp_path / "no_replay", [40.0, 40.0], overrides=["buffer_size=64"])
    population(tmp_path / "neither", [20.0, 20.0], overrides=["buffer_size=64", "target_sync.every=1"])
    population(tmp_path / "other_lr", [0.0, 0.0], overrides=["lr=0.5", "target_sync.every=1"])
    claim = next(c for c in report.CLAIMS if c.key == "target_network")
    runs = report.Runs([tmp_path])
    strata = claim.strata(runs)
    assert sorted((sorted(Path(d).name for d in s["baseline"]), sorted(Path(d).name for d in s["treatment"]))
                  for s in strata) == [(["neither"], ["no_replay"]), (["no_target"], ["full"])]
    ev = claim.evaluate(runs, tmp_path / "out", {})
    assert ev.effect.estimate == pytest.approx(60.0) and ev.effect.verdict == "reproduced"
    assert "2 strata" in " ".join(ev.notes)


def test_a_plug_in_claim_with_its_own_metric_and_figure(tmp_path):
    """The interface another module uses: a Comparison with its own metric and figure functions, and a claim
    object of its own with an evaluate method."""
    population(tmp_path / "a", [1.0, 2.0, 3.0], agent="qtable")
    population(tmp_path / "b", [1.0, 2.0, 3.0], agent="double_qtable")

    def left_share(df: pd.DataFrame) -> pd.DataFrame:  # a made-up metric: minus the final return
        f = report.final_return(df)
        return f.assign(score=-f["score"])

    def no_figure(df, out, colours):
        return []

    custom = Comparison(key="maxbias", title="Double Q-learning avoids the maximisation bias", statement="s",
                        paper="Sutton and Barto 2018, Example 6.7", testbed="the maximisation-bias MDP",
                        agents="Double Q-learning vs Q-learning", metric="share of left actions",
                        figure_text="f", baseline=Arm("Q-learning", ("qtable",)),
                        treatment=Arm("Double Q-learning", ("double_qtable",)), sign=-1, differ=("agent",),
                        metric_fn=left_share, figure=no_figure)

    class Fixed(report.Claim):
        def evaluate(self, runs, out_dir, colours):
            return Evidence(Effect(3.0, 1.0, 5.0, +1, "a fixed effect"), "| t |\n|---|")

    fixed = Fixed("fixed", "A fixed claim", "s", "p", "t", "a", "m", "f")
    _, results, _ = write_report([tmp_path], tmp_path / "out", claims=[custom, fixed])
    assert [r["verdict"] for r in results] == ["inconclusive", "reproduced"]
    assert results[0]["effect"] == pytest.approx(0.0)


REFERENCE = [ROOT / "results/reference/cartpole_algorithms", ROOT / "results/reference/cartpole_ablations"]


@pytest.mark.skipif(not all(p.exists() for p in REFERENCE), reason="reference runs not present")
def test_report_on_the_reference_ablation_runs(tmp_path, capsys):
    keys = ["dqn_generalises", "target_network", "experience_replay"]
    assert report.main([str(p) for p in REFERENCE] + ["--out", str(tmp_path), "--claims", *keys]) == 0
    out = capsys.readouterr().out
    text = (tmp_path / "report.md").read_text()
    # CartPole: DQN ends far above the discretised table; without a target network every seed collapses to ~9
    assert "reproduced: DQN generalises where a table cannot" in out
    assert "reproduced: The target network makes DQN stable" in out
    assert "Experience replay makes DQN stable" in out and "| claim | verdict | effect [95% CI] |" in text
    for key in keys:
        assert (tmp_path / f"{key}.png").exists() and f"wrote {tmp_path / (key + '.png')}" in out


def test_unknown_claim_is_a_one_line_error(tmp_path, capsys):
    population(tmp_path / "r", [1.0])
    with pytest.raises(SystemExit) as exit_info:
        report.main([str(tmp_path), "--claims", "nope"])
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2 and len(err.splitlines()) == 1 and "nope" in err
