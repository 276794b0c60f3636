"""analysis/report.py: the verdict rule, matched strata, planted effects on synthetic runs, plug-in claims, and
the report on the committed reference runs."""

from __future__ import annotations

import dataclasses
import sys
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


# --- the plug-in claims on crafted runs whose effect is known ---------------------------------------------------------

def _rewrite_returns(run_dir: Path, rows) -> None:
    """Replace a synthetic run's returns.csv by ``rows``: (agent, env, seed, phase, step, episode, return, length,
    q_estimate, mc_return)."""
    from test_analysis import HEADER
    (run_dir / "returns.csv").write_text(HEADER + "".join(
        ",".join("" if v is None else str(v) for v in (*r, r[4] / 100)) + "\n" for r in rows))


def maxbias_population(run_dir: Path, agent: str, left_of_ten: int, seeds: int = 4, replay: bool = False) -> Path:
    """300 training episodes per seed on the maximisation-bias MDP; seed s goes left (an episode of 2 steps) in
    episode k when (k + s) % 10 < left_of_ten: exactly 10 * left_of_ten % of every 10 consecutive episodes."""
    overrides = ["buffer_size=10000", "batch_size=32"] if replay else ["buffer_size=1", "batch_size=1"]
    population(run_dir, [0.0] * seeds, agent=agent, overrides=overrides, env="rlzoo/MaxBias-v0")
    rows = []
    for s in range(seeds):
        step = 0
        for k in range(1, 301):
            length = 2 if (k + s) % 10 < left_of_ten else 1
            step += length
            rows.append((agent, "rlzoo/MaxBias-v0", s, "train", step, k, 0.0, length, 0.1 * left_of_ten, 0.0))
    _rewrite_returns(run_dir, rows)
    return run_dir


def test_maxbias_claim_measures_left_actions_on_online_tables_only(tmp_path):
    from analysis import maxbias
    maxbias_population(tmp_path / "q", "qtable", 6)
    maxbias_population(tmp_path / "double_q", "double_qtable", 1)
    # tables with replay: the other way round; a stratum of their own, which the tabular claim leaves out
    maxbias_population(tmp_path / "q_replay", "qtable", 2, replay=True)
    maxbias_population(tmp_path / "double_q_replay", "double_qtable", 9, replay=True)
    tabular, deep = maxbias.report_claims()
    runs = report.Runs([tmp_path])
    ev = tabular.evaluate(runs, tmp_path / "out", {})
    assert ev.effect.estimate == pytest.approx(10.0 - 60.0) and ev.effect.verdict == "reproduced"
    assert "| Q-learning | `tmp_path0/q` | 4 * | 60.0 [60.0, 60.0] | 60.0 [60.0, 60.0] | 60.0 [60.0, 60.0] | " \
           "0.600 [0.600, 0.600] |" in ev.table.replace(f"`{tmp_path.name}/", "`tmp_path0/")
    assert "q_replay" not in ev.table and (tmp_path / "out" / "maxbias_tabular.png").exists()
    assert deep.evaluate(runs, tmp_path / "out", {}) is None      # no DQN runs here
    # the claim's metric by hand: a seed's share of left episodes among its first 300
    df = runs.returns[runs.returns["run_dir"] == str(tmp_path / "q")]
    assert maxbias.left_share(df)["score"].tolist() == pytest.approx([60.0] * 4)
    assert maxbias.left_share(df, 1, 10)["score"].tolist() == pytest.approx([60.0] * 4)


def corridor_population(run_dir: Path, agent: str, n_actions: int, finals) -> Path:
    """A policy-evaluation run whose seed i logs SE 1000 at first, then finals[i] in its last 10 rows."""
    population(run_dir, [0.0] * len(finals), agent=agent, env="rlzoo/Corridor-v0",
               config={"env.kwargs.n_actions": n_actions})
    lines = ["agent,env,seed,step,updates,se,mse"]
    for seed, final in enumerate(finals):
        for step in range(50, 1001, 50):
            se = 1000.0 if step <= 500 else final
            lines.append(f"{agent},rlzoo/Corridor-v0,{seed},{step},{step},{se},{se / 100}")
    (run_dir / "q_error.csv").write_text("\n".join(lines) + "\n")
    return run_dir


def test_corridor_claims_effects_by_hand(tmp_path):
    from analysis import corridor
    finals = {(5, "dqn"): [40.0, 44.0, 36.0], (5, "dueling_dqn"): [6.0, 4.0, 5.0],
              (20, "dqn"): [600.0, 620.0, 580.0], (20, "dueling_dqn"): [70.0, 60.0, 80.0]}
    for (n, agent), f in finals.items():
        corridor_population(tmp_path / f"{agent}_{n}", agent, n, f)
    lower, grows = corridor.report_claims()
    runs = report.Runs([tmp_path])
    ev = lower.evaluate(runs, tmp_path / "out", {})
    # dueling minus single, averaged over the two numbers of actions: ((5 - 40) + (70 - 600)) / 2
    assert ev.effect.estimate == pytest.approx(((5 - 40) + (70 - 600)) / 2) and ev.effect.verdict == "reproduced"
    assert "| 5 | 40 [" in ev.table and "| 20 | 600 [" in ev.table and "3/3 |" in ev.table
    ev = grows.evaluate(runs, tmp_path / "out", {})
    assert ev.effect.estimate == pytest.approx((600 - 70) - (40 - 5)) and ev.effect.verdict == "reproduced"
    assert "8.57" in " ".join(ev.notes)                 # the ratio at 20 actions: 600 / 70
    assert (tmp_path / "out" / "dueling_corridor.png").exists()
    assert (tmp_path / "out" / "dueling_corridor_actions.png").exists()

    # no gain from more actions: the same gap at both -> the growth is inconclusive (its interval holds 0)
    flat = tmp_path / "flat"
    for n in (5, 20):
        corridor_population(flat / f"dqn_{n}", "dqn", n, [40.0, 50.0, 30.0])
        corridor_population(flat / f"dueling_{n}", "dueling_dqn", n, [6.0, 4.0, 5.0])
    ev = grows.evaluate(report.Runs([flat]), tmp_path / "out_flat", {})  # (draws only the small gap figure)
    assert ev.effect.estimate == pytest.approx(0.0) and ev.effect.verdict == "inconclusive"


def minatar_ablation_runs(root: Path, rng, replay_cost: float, target_cost: float, seeds: int = 5) -> dict:
    """The 2 games x replay x target of minatar_ablation with planted costs of removing each part (additive)."""
    base = {"MinAtar/breakout": 20.0, "MinAtar/space_invaders": 60.0}
    scores = {}
    for env, b in base.items():
        game = env.split("/")[1]
        for replay in (True, False):
            for target in (True, False):
                mean = b - (0 if replay else replay_cost) - (0 if target else target_cost)
                s = rng.normal(mean, 1.0, seeds)
                overrides = [f"buffer_size={100000 if replay else 32}", "batch_size=32",
                             f"target_sync.every={1000 if target else 1}"]
                population(root / f"{game}_{int(replay)}{int(target)}", s, overrides=overrides, env=env)
                scores[(env, replay, target)] = s
    return scores


def test_minatar_ablation_claims_and_where_cartpole_differs(tmp_path):
    rng = np.random.default_rng(1)
    scores = minatar_ablation_runs(tmp_path / "minatar", rng, replay_cost=15.0, target_cost=2.0)
    # CartPole: replay makes no difference (the same scores), the target network a large one
    same = rng.normal(300, 10, 5)
    population(tmp_path / "cartpole/full", same, env="CartPole-v1", overrides=["buffer_size=100000"])
    population(tmp_path / "cartpole/no_replay", same[::-1], env="CartPole-v1", overrides=["buffer_size=64"])
    # the verdicts are the point here, not the figures (drawn in the other tests): leave them out, for speed
    claims = {c.key: dataclasses.replace(c, figure=lambda *a: []) for c in report.all_claims()
              if isinstance(c, Comparison)}
    keys = ["experience_replay", "minatar_experience_replay", "minatar_target_network", "minatar_replay_vs_target"]
    path, results, _ = write_report([tmp_path], tmp_path / "out", claims=[claims[k] for k in keys])
    by_key = {r["key"]: r for r in results}
    mean = lambda *k: scores[k].mean()  # noqa: E731
    envs = ("MinAtar/breakout", "MinAtar/space_invaders")
    # replay: 4 strata (2 games x target on/off), each replay minus no replay
    want = np.mean([mean(e, True, t) - mean(e, False, t) for e in envs for t in (True, False)])
    assert by_key["minatar_experience_replay"]["effect"] == pytest.approx(want)
    assert by_key["minatar_experience_replay"]["verdict"] == "reproduced"
    want = np.mean([mean(e, r, True) - mean(e, r, False) for e in envs for r in (True, False)])
    assert by_key["minatar_target_network"]["effect"] == pytest.approx(want)
    # no target (replay kept) minus no replay (target kept): 15 - 2 = 13 planted
    want = np.mean([mean(e, True, False) - mean(e, False, True) for e in envs])
    assert by_key["minatar_replay_vs_target"]["effect"] == pytest.approx(want) and want > 10
    assert by_key["minatar_replay_vs_target"]["verdict"] == "reproduced"
    assert by_key["experience_replay"]["verdict"] == "inconclusive"   # CartPole's own stratum only
    text = path.read_text()
    replay_section = text.split("## 2. ")[1].split("## 3. ")[0]
    assert "**Against [1. Experience replay makes DQN stable](#1-experience-replay-makes-dqn-stable):** there the " \
           "verdict is *inconclusive*" in replay_section and "the two testbeds differ" in replay_section
    assert "Why the testbeds may differ" in replay_section
    # the claims table for the README one level up, its links into out/report.md
    table = (tmp_path / "out" / "claims_table.md").read_text().splitlines()
    assert table[0] == "| claim | verdict | effect [95% CI] |" and len(table) == 2 + len(keys)
    assert table[3].startswith("| [2. Experience replay makes DQN learn on MinAtar]"
                               "(out/report.md#2-experience-replay-makes-dqn-learn-on-minatar) | reproduced | ")

    # no planted effect of the target network: inconclusive
    flat = tmp_path / "flat"
    minatar_ablation_runs(flat, np.random.default_rng(2), replay_cost=15.0, target_cost=0.0)
    _, results, _ = write_report([flat], tmp_path / "out_flat", claims=[claims["minatar_target_network"]])
    assert results[0]["verdict"] == "inconclusive"


def overestimation_population(run_dir: Path, agent: str, env: str, gaps, early_gap: float = 5.0) -> Path:
    """Greedy evaluations at steps 100..1000 (2 episodes each) with mc_return 1.0 and q_estimate 1.0 + gap: seed i's
    gap is gaps[i] in the last 5 evaluations and early_gap before (which the metric must not see)."""
    steps = list(range(100, 1001, 100))
    population(run_dir, [0.0] * len(gaps), agent=agent, env=env,
               overrides=["buffer_size=100000", "batch_size=32", "target_sync.every=1000"])
    cfg = run_dir / ".hydra/config.yaml"
    cfg.write_text(cfg.read_text().replace("eval_every: 100\n", "eval_every: 100\n").replace("eval_episodes: 1",
                                                                                           "eval_episodes: 2"))
    rows = []
    for seed, gap in enumerate(gaps):
        for step in steps:
            g = gap if step > 500 else early_gap
            for episode in (1, 2):
                rows.append((agent, env, seed, "eval", step, episode, 10.0 * (seed + 1), 50, 1.0 + g, 1.0))
    _rewrite_returns(run_dir, rows)
    total = run_dir / "metrics.csv"
    total.write_text(total.read_text().replace(",500,", ",1000,"))
    return run_dir


def test_minatar_overestimation_claim_uses_the_last_greedy_evaluations(tmp_path):
    from analysis import minatar
    for game, dqn_gaps, double_gaps in (("breakout", [0.5, 0.7, 0.6], [0.1, 0.0, 0.2]),
                                        ("space_invaders", [1.0, 1.2, 1.1], [0.3, 0.2, 0.4])):
        env = f"MinAtar/{game}"
        overestimation_population(tmp_path / f"dqn_{game}", "dqn", env, dqn_gaps)
        overestimation_population(tmp_path / f"double_{game}", "double_dqn", env, double_gaps)
    claim = next(c for c in minatar.report_claims() if c.key == "double_overestimation_minatar")
    ev = claim.evaluate(report.Runs([tmp_path]), tmp_path / "out", {})
    want = ((0.1 - 0.6) + (0.3 - 1.1)) / 2
    assert ev.effect.estimate == pytest.approx(want) and ev.effect.verdict == "reproduced"
    # the table: gap, estimate, the greedy return and the final return (mean of the seeds' 10, 20, 30)
    assert "| 0.600 [" in ev.table and "| 1.600 [" in ev.table and "| 1.000 [1.000, 1.000] |" in ev.table
    assert "| 20.0 [" in ev.table
    assert [p.name for p in ev.figures] == ["double_overestimation_minatar.png",
                                            "double_overestimation_minatar_returns.png"]


# --- analysis.claims: every claim's experiments, then the report ------------------------------------------------------

def test_claims_plan_covers_every_claim_with_an_existing_experiment(capsys):
    from analysis import claims
    covered = {c for e in claims.EXPERIMENTS for c in e.claims}
    assert {c.key for c in report.all_claims()} <= covered
    for e in claims.EXPERIMENTS:
        assert (ROOT / "conf" / "experiment" / f"{e.experiment}.yaml").exists(), e.experiment
    assert claims.main(["run", "--out", "/x", "--dry-run", "--smoke", "--jobs", "2"]) == 0
    lines = [l for l in capsys.readouterr().out.splitlines() if l.startswith("[")]
    assert len(lines) == len(claims.EXPERIMENTS) + 1
    assert lines[0].startswith(f"[1/{len(lines)}] python -m rlzoo -m +experiment=algorithms_frozenlake n_seeds=2 ")
    assert "hydra/launcher=joblib hydra.launcher.n_jobs=2 hydra.sweep.dir=/x/runs/algorithms_frozenlake" in lines[0]
    assert lines[-1].endswith("python -m analysis.report /x/runs --out /x/report")
    assert claims.main(["run", "--out", "/x", "--dry-run", "--only", "overestimation_minatar"]) == 0
    out = capsys.readouterr().out
    assert "+experiment=overestimation_minatar agent=double_dqn hydra.sweep.dir=/x/runs/overestimation_minatar" in out
    assert "--claims double_overestimation_minatar" in out and "total_steps" not in out
    with pytest.raises(SystemExit) as exit_info:
        claims.main(["run", "--out", "/x", "--only", "nope"])
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2 and len(err.splitlines()) == 1 and "nope" in err and "maxbias" in err


def test_claims_run_smoke_runs_the_sweeps_then_the_report(tmp_path, capsys):
    """The maximisation-bias experiment at its smoke budget, and a sweep that fails: the failure does not stop
    the report, and the exit status says it."""
    from analysis import claims

    class Broken(claims.Experiment):
        def command(self, out, smoke=False, jobs=1):  # a sweep that fails at once (exit 3), without a start-up
            return [sys.executable, "-c", "raise SystemExit(3)"]

    maxbias = next(e for e in claims.EXPERIMENTS if e.name == "maxbias")
    status = claims.run(tmp_path, [Broken("broken", "maxbias", ()), maxbias], smoke=True, claims=["maxbias_tabular"])
    captured = capsys.readouterr()
    assert status == 1 and "raise SystemExit(3)" in captured.err and "failed" in captured.err
    assert sorted(p.name for p in (tmp_path / "runs" / "maxbias").iterdir() if p.is_dir()) == \
        ["0_qtable", "1_double_qtable"]
    text = (tmp_path / "report" / "report.md").read_text()
    assert "## 1. Double Q-learning removes the maximisation bias" in text and "no runs given" not in text
    assert "| Q-learning | `maxbias/0_qtable` | 2 * |" in text
