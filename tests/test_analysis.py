"""analysis/: statistics with known answers on synthetic data, robust loading of broken runs, and a
smoke test of the three scripts on a tiny real sweep."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from analysis import plot_curves, plot_overestimation, summary
from analysis.common import aligned_curves
from analysis.load import RunWarning, find_run_dirs, load_metrics, load_returns
from analysis.stats import (bin_curves, interpolate_curves, iqm, iqm_ci, mean_ci, probability_of_improvement,
                            steps_to_threshold)

ROOT = Path(__file__).resolve().parents[1]
HEADER = "agent,env,seed,phase,step,episode,return,length,q_estimate,mc_return,time\n"
METRICS_HEADER = "agent,env,seed,step,updates,loss,q_mean,grad_norm,epsilon,sps,time\n"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def write_run(run_dir: Path, agent: str, seeds, evals: dict[int, list[float]] | None = None, train=(),
              overrides=(), total_steps: int | None = None, last_metric_step: int | None = None, env: str = "Toy-v0",
              config: dict | None = None) -> Path:
    """A synthetic run directory: eval rows {step: [return per seed]}, train rows (seed, step, return, q, mc).

    With ``total_steps``: also ``metrics.csv`` and ``.hydra/`` with a resolved config (a few DQN keys, the
    ``overrides`` applied as Hydra would, then ``config``) and the overrides."""
    run_dir.mkdir(parents=True, exist_ok=True)
    lines = [HEADER]
    for seed, step, ret, q, mc in train:
        lines.append(f"{agent},{env},{seed},train,{step},1,{ret},10,{q},{mc},{step / 100}\n")
    for step, rets in (evals or {}).items():
        for seed, ret in zip(seeds, rets):
            lines.append(f"{agent},{env},{seed},eval,{step},1,{ret},10,,,{step / 100}\n")
    (run_dir / "returns.csv").write_text("".join(lines))
    if total_steps is not None:
        hydra = run_dir / ".hydra"
        hydra.mkdir(exist_ok=True)
        steps = sorted(evals or {})
        cfg = {"seed": int(min(seeds)), "n_seeds": len(seeds), "total_steps": total_steps,
               "eval_every": steps[0] if steps else 0, "eval_episodes": 1, "lr": 0.001, "gamma": 0.99,
               "buffer_size": 100000, "batch_size": 64, "threads": 1,
               "agent": {"_target_": "rlzoo.agents.dqn.DQNAgent", "gamma": "${gamma}"},
               "target_sync": {"_target_": "rlzoo.target_sync.HardSync", "every": 128},
               "env": {"_target_": "rlzoo.envs.gym.make_env", "id": env}}
        for o in overrides:
            key, _, value = o.lstrip("+").partition("=")
            if key in ("agent", "env", "experiment"):
                continue
            node = cfg
            *parents, leaf = key.split(".")
            for k in parents:
                node = node.setdefault(k, {})
            node[leaf] = yaml.safe_load(value)
        for key, value in (config or {}).items():
            node = cfg
            *parents, leaf = key.split(".")
            for k in parents:
                node = node.setdefault(k, {})
            node[leaf] = value
        (hydra / "config.yaml").write_text(yaml.safe_dump(cfg))
        (hydra / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
        last = total_steps if last_metric_step is None else last_metric_step
        (run_dir / "metrics.csv").write_text(METRICS_HEADER + "".join(
            f"{agent},{env},{s},{last},1,0.1,1.0,1.0,0.1,100.0,1.0\n" for s in seeds))
    return run_dir


def labels_of(df: pd.DataFrame) -> dict[str, str]:
    return df.drop_duplicates("run_dir").set_index("run_dir")["label"].to_dict()


# --- statistics with known answers -------------------------------------------------------------------

def test_iqm_of_known_array():
    # n = 8, sorted [-50, 1, 2, 3, 4, 5, 6, 100]: 2 cut from each end, mean of 2, 3, 4, 5 = 3.5.
    assert iqm(np.array([100.0, 1, 2, 3, 4, 5, 6, -50])) == pytest.approx(3.5)
    # n = 4: one cut from each end. The outliers do not move it.
    assert iqm(np.array([0.0, 10, 20, 1e9])) == pytest.approx(15.0)
    assert iqm_ci(np.array([1.0, 2, 3, 4, 5, 6, 7, 8]))[0] == pytest.approx(4.5)


def test_bootstrap_ci_contains_true_mean_and_shrinks():
    rng = np.random.default_rng(0)
    covered, widths = 0, []
    for trial in range(40):
        x = rng.normal(10.0, 2.0, size=20)
        est, lo, hi = mean_ci(x, reps=500, seed=trial)
        assert lo <= est <= hi and est == pytest.approx(x.mean())
        covered += lo <= 10.0 <= hi
        widths.append(hi - lo)
    assert covered >= 32  # nominal 95% of 40; percentile intervals run a little narrow at n = 20
    # width ~ 2 * 1.96 * 2 / sqrt(20) = 1.75
    assert 1.2 < np.mean(widths) < 2.1
    est, lo, hi = mean_ci(rng.normal(10.0, 2.0, size=500), reps=500)
    assert lo < 10.0 < hi and hi - lo < 0.5


def test_stratified_bootstrap_keeps_tasks_apart():
    # Two tasks on very different scales: every resample keeps 3 runs of each task, so the mean stays
    # near (0 + 1000) / 2 with a narrow interval; a pooled bootstrap would swing between 0 and 1000.
    task_a, task_b = np.array([0.0, 1.0, 2.0]), np.array([1000.0, 1001.0, 1002.0])
    est, lo, hi = mean_ci([task_a, task_b], reps=1000)
    assert est == pytest.approx(501.0)
    assert 500.0 <= lo <= est <= hi <= 502.0
    # One run per task: nothing to resample.
    assert mean_ci([[3.0], [5.0]]) == (4.0, 4.0, 4.0)


def test_probability_of_improvement_known_cases():
    x, y = np.array([1.0, 2.0, 3.0]), np.array([0.0, 0.5, 2.0])
    # Pairs (x, y): 9 pairs; x > y in 7, ties 1 (2 vs 2), x < y in 1 -> (7 + 0.5) / 9.
    p, lo, hi = probability_of_improvement(x, y, reps=500)
    assert p == pytest.approx(7.5 / 9) and lo <= p <= hi
    assert probability_of_improvement(x + 10, y)[0] == 1.0
    assert probability_of_improvement(y, x)[0] == pytest.approx(1.5 / 9)
    assert probability_of_improvement(x, x)[0] == pytest.approx(0.5)
    # Two tasks: averaged over tasks (1.0 on the first, 0.0 on the second).
    assert probability_of_improvement([[5.0, 6.0], [0.0, 1.0]], [[1.0, 2.0], [5.0, 6.0]])[0] == pytest.approx(0.5)


def test_interpolation_aligns_two_offset_curves():
    # Curve a logged at 0, 100, 200 (y = step); curve b logged at 50, 150, 250 (y = 2 * step).
    df = pd.DataFrame({"unit": ["a"] * 3 + ["b"] * 3, "step": [0, 100, 200, 50, 150, 250],
                       "return": [0.0, 100, 200, 100, 300, 500]})
    out = interpolate_curves(df, grid=[0, 50, 100, 150, 200, 250])
    a = out[out["unit"] == "a"].set_index("step")["return"]
    b = out[out["unit"] == "b"].set_index("step")["return"]
    assert a.to_dict() == {0: 0.0, 50: 50.0, 100: 100.0, 150: 150.0, 200: 200.0}  # 250: outside, not extrapolated
    assert b.to_dict() == {50: 100.0, 100: 200.0, 150: 300.0, 200: 400.0, 250: 500.0}
    mean = out.groupby("step")["return"].mean()
    assert mean[100] == 150.0 and mean[200] == 300.0


def test_binning_aligns_two_offset_curves():
    # Episodes ending at different steps; bins of width 100 over [0, 300], labelled by their right edge.
    df = pd.DataFrame({"unit": ["a"] * 4 + ["b"] * 3, "step": [10, 90, 150, 290, 60, 160, 240],
                       "return": [1.0, 3.0, 5.0, 7.0, 10.0, 20.0, 30.0]})
    out = bin_curves(df, bins=3, max_step=300)
    a = out[out["unit"] == "a"].set_index("step")["return"].to_dict()
    b = out[out["unit"] == "b"].set_index("step")["return"].to_dict()
    assert a == {100.0: 2.0, 200.0: 5.0, 300.0: 7.0}
    assert b == {100.0: 10.0, 200.0: 20.0, 300.0: 30.0}


def test_steps_to_threshold():
    c = pd.DataFrame({"step": [300, 100, 200], "return": [9.0, 1.0, 5.0]})
    assert steps_to_threshold(c, 5.0) == 200
    assert np.isnan(steps_to_threshold(c, 10.0))


# --- loading ------------------------------------------------------------------------------------------

def test_broken_runs_are_skipped_or_trimmed_with_a_warning(tmp_path):
    good = write_run(tmp_path / "sweep" / "0_good", "dqn", [0, 1], {100: [1.0, 2.0], 200: [3.0, 4.0]},
                     total_steps=200)
    empty = tmp_path / "sweep" / "1_empty"
    empty.mkdir(parents=True)
    (empty / "returns.csv").write_text("")
    header_only = tmp_path / "sweep" / "2_header"
    header_only.mkdir()
    (header_only / "returns.csv").write_text(HEADER)
    cut = write_run(tmp_path / "sweep" / "3_cut", "double_dqn", [0], {100: [5.0], 200: [6.0]})
    with open(cut / "returns.csv", "a") as f:
        f.write("double_dqn,Toy-v0,0,eval,300,3,7")  # killed mid-row: no newline
    garbage = tmp_path / "sweep" / "4_garbage"
    garbage.mkdir()
    (garbage / "returns.csv").write_bytes(b"\x00\xff\x13 not a csv")
    only_metrics = tmp_path / "sweep" / "5_metrics_only"  # killed before the first episode
    only_metrics.mkdir()
    (only_metrics / "metrics.csv").write_text(METRICS_HEADER)

    with pytest.warns(RunWarning) as record:
        df = load_returns([tmp_path / "sweep", tmp_path / "does-not-exist"])
    messages = " ".join(str(w.message) for w in record)
    for expected in ("1_empty", "2_header", "3_cut", "cut mid-row", "4_garbage", "5_metrics_only",
                     "does-not-exist"):
        assert expected in messages
    assert sorted(df["run_dir"].unique()) == [str(good), str(cut)]
    assert sorted(df[df["run_dir"] == str(cut)]["step"]) == [100, 200]  # the cut row is gone
    assert len(df) == 6 and df["return"].dtype == float


def test_unfinished_run_is_flagged_and_left_out_of_the_summary(tmp_path, capsys):
    write_run(tmp_path / "a", "dqn", [0, 1], {100: [1.0, 1.0], 200: [2.0, 2.0]}, total_steps=200)
    write_run(tmp_path / "b", "double_dqn", [0], {100: [9.0]}, total_steps=200, last_metric_step=100)
    with pytest.warns(RunWarning, match="unfinished"):
        df = load_returns([tmp_path / "*"])
    assert df.groupby("agent")["finished"].all().to_dict() == {"double_dqn": False, "dqn": True}
    summary.main([str(tmp_path / "*"), "--out", str(tmp_path / "s"), "--reps", "200"])
    table = pd.read_csv(tmp_path / "s.csv")
    assert table["label"].tolist() == ["dqn"]


def test_labels_tell_ablations_apart(tmp_path):
    evals = {100: [1.0]}
    write_run(tmp_path / "full", "dqn", [0], evals, total_steps=100,
              overrides=["agent=dqn", "n_seeds=1", "progress=false"])  # execution settings: no label
    write_run(tmp_path / "norep", "dqn", [0], evals, total_steps=100,
              overrides=["agent=dqn", "buffer_size=64", "n_seeds=1", "+experiment=x"])
    write_run(tmp_path / "double", "double_dqn", [0], evals, total_steps=100, overrides=["agent=double_dqn"])
    df = load_returns([tmp_path])
    labels = labels_of(df)
    assert labels[str(tmp_path / "full")] == "dqn"
    assert labels[str(tmp_path / "norep")] == "dqn [buffer_size=64]"  # the experiment's name is not a setting
    assert labels[str(tmp_path / "double")] == "double_dqn"
    assert df["buffer_size"].dropna().unique().tolist() == ["64"]  # override columns are kept
    assert set(load_returns([tmp_path], label_keys=[])["label"]) == {"dqn", "double_dqn"}
    assert set(load_returns([tmp_path], label_keys=["target_sync.every"])["label"]) == {
        "dqn [target_sync.every=128]", "double_dqn [target_sync.every=128]"}


def test_label_comes_from_the_resolved_config_not_the_command_line(tmp_path):
    evals = {100: [1.0]}
    write_run(tmp_path / "a_default", "dqn", [0], evals, total_steps=100, overrides=["agent=dqn"])
    write_run(tmp_path / "b_explicit", "dqn", [1], evals, total_steps=100,  # the default, passed explicitly
              overrides=["agent=dqn", "buffer_size=100000", "target_sync.every=128"])
    write_run(tmp_path / "c_small", "dqn", [2], evals, total_steps=100, overrides=["agent=dqn", "buffer_size=64"])
    write_run(tmp_path / "d_sync", "dqn", [3], evals, total_steps=100,  # a group swapped: shown by class name
              overrides=["agent=dqn", "target_sync=soft"],
              config={"target_sync": {"_target_": "rlzoo.target_sync.SoftSync", "tau": 0.005}})
    labels = labels_of(load_returns([tmp_path]))
    assert labels[str(tmp_path / "a_default")] == labels[str(tmp_path / "b_explicit")] == "dqn"
    assert labels[str(tmp_path / "c_small")] == "dqn [buffer_size=64]"
    assert labels[str(tmp_path / "d_sync")] == "dqn [target_sync=SoftSync, target_sync.tau=0.005]"
    # a module moved by a refactoring is the same algorithm; an interpolation (gamma: ${gamma}) is not a key
    write_run(tmp_path / "e_moved", "dqn", [4], evals, total_steps=100, overrides=["agent=dqn"],
              config={"target_sync._target_": "rlzoo.sync.HardSync"})
    assert labels_of(load_returns([tmp_path]))[str(tmp_path / "e_moved")] == "dqn"


def test_environment_keys_never_enter_a_label_so_the_aggregate_forms(tmp_path):
    # Two environments, each with its own env.* settings and its own learning rate (an env-specific preset),
    # and an ablation in each: the labels agree across environments.
    for env, lr in (("Toy-v0", 0.001), ("Toy-v1", 0.01)):
        config = {"lr": lr, "env.id": env, "env.max_episode_steps": 200 if env == "Toy-v0" else 500}
        write_run(tmp_path / f"{env}_full", "dqn", [0, 1], {100: [5.0, 6.0]}, total_steps=100, env=env,
                  overrides=["agent=dqn", f"env.id={env}"], config=config)
        write_run(tmp_path / f"{env}_norep", "dqn", [0, 1], {100: [1.0, 2.0]}, total_steps=100, env=env,
                  overrides=["agent=dqn", f"env.id={env}", "buffer_size=64"], config=config)
    df = load_returns([tmp_path])
    assert set(df["label"]) == {"dqn", "dqn [buffer_size=64]"}
    table, poi = summary.summarize(df, reps=100)
    assert len(table) == 4
    both = poi[(poi["env"] == "all") & (poi["x"] == "dqn") & (poi["y"] == "dqn [buffer_size=64]")]
    assert both["p"].tolist() == [1.0]  # the cross-environment aggregate exists


def test_a_seed_repeated_in_two_directories_counts_once(tmp_path):
    write_run(tmp_path / "a", "dqn", [0, 1], {100: [1.0, 2.0]}, total_steps=100)
    write_run(tmp_path / "b", "dqn", [0, 1], {100: [1.0, 2.0]}, total_steps=100, overrides=["progress=false"])
    write_run(tmp_path / "c", "dqn", [2], {100: [3.0]}, total_steps=100)  # another seed: kept
    with pytest.warns(RunWarning, match="repeat the configuration and seeds"):
        df = load_returns([tmp_path])
    assert sorted(df["unit"].unique()) == [f"{tmp_path / 'a'}#0", f"{tmp_path / 'a'}#1", f"{tmp_path / 'c'}#2"]


def test_summary_known_answer(tmp_path):
    # 4 seeds of X at 10, 20, 30, 40 and 4 of Y at 0, 0, 0, 50 (final evaluation at step 200).
    write_run(tmp_path / "x", "x", [0, 1, 2, 3], {100: [0, 0, 0, 0], 200: [10, 20, 30, 40]}, total_steps=200)
    write_run(tmp_path / "y", "y", [0, 1, 2, 3], {100: [0, 0, 0, 0], 200: [0, 0, 0, 50]}, total_steps=200)
    df = load_returns([tmp_path])
    table, poi = summary.summarize(df, thresholds={"Toy-v0": 15.0}, reps=300, last_evals=1, sustain=1)
    x = table.set_index("label").loc["x"]
    assert x["seeds"] == 4 and x["mean"] == pytest.approx(25.0) and x["iqm"] == pytest.approx(25.0)
    assert x["reached"] == 3 and x["steps_to_threshold_median"] == 200
    y = table.set_index("label").loc["y"]
    assert y["mean"] == pytest.approx(12.5) and y["iqm"] == pytest.approx(0.0) and y["reached"] == 1
    p = poi[(poi["x"] == "x") & (poi["y"] == "y")]["p"].iloc[0]
    assert p == pytest.approx((4 * 3 + 0) / 16)  # x beats each of the three zeros, never the 50
    md = summary.to_markdown(table, poi)
    assert "| Toy-v0 | x | 4 * | 25.0 [" in md  # fewer than 10 seeds: marked rough
    assert "fewer than 10 seeds: the intervals are rough" in md and md.count("percentile bootstrap") == 1


def test_overestimation_gap(tmp_path):
    train = [(0, s, 1.0, q, 1.0) for s, q in ((10, 0.0), (60, 3.0), (100, 5.0))]
    write_run(tmp_path / "r", "dqn", [0], train=train, total_steps=100)
    gaps = summary.overestimation_gaps(load_returns([tmp_path]), gap_from=0.5)
    assert gaps["gap"].iloc[0] == pytest.approx(((3 - 1) + (5 - 1)) / 2)



def write_eval_estimates(run_dir: Path, agent: str, rows) -> Path:
    """A run whose greedy evaluations log the estimate: rows (seed, step, q_estimate, mc_return), one episode each;
    training rows without it."""
    seeds = sorted({r[0] for r in rows})
    steps = sorted({r[1] for r in rows})
    write_run(run_dir, agent, seeds, {s: [1.0] * len(seeds) for s in steps}, total_steps=steps[-1])
    lines = [HEADER] + [f"{agent},Toy-v0,{seed},train,{step - 1},1,1.0,10,5.0,0.0,0.1\n" for seed, step, _, _ in rows]
    lines += [f"{agent},Toy-v0,{seed},eval,{step},1,1.0,10,{q},{mc},0.1\n" for seed, step, q, mc in rows]
    (run_dir / "returns.csv").write_text("".join(lines))
    return run_dir


def test_overestimation_of_the_greedy_policy_uses_the_last_evaluations(tmp_path, capsys):
    # seed 0: gaps 9 (early), then 1, 2, 3 in the last three evaluations; seed 1: 9, then 0, 0, 0
    rows = [(0, 100, 10.0, 1.0), (0, 200, 2.0, 1.0), (0, 300, 3.0, 1.0), (0, 400, 4.0, 1.0),
            (1, 100, 10.0, 1.0), (1, 200, 1.0, 1.0), (1, 300, 1.0, 1.0), (1, 400, 1.0, 1.0)]
    write_eval_estimates(tmp_path / "r", "dqn", rows)
    df = load_returns([tmp_path])
    gaps = summary.last_eval_gaps(df, last_evals=3).set_index("unit")
    assert gaps["gap"].tolist() == pytest.approx([2.0, 0.0]) and gaps["episodes"].tolist() == [3, 3]
    assert gaps["q_estimate"].tolist() == pytest.approx([3.0, 1.0]) and gaps["mc_return"].tolist() == [1.0, 1.0]
    assert summary.last_eval_gaps(df, last_evals=4)["gap"].tolist() == pytest.approx([(9 + 6) / 4, 9 / 4])
    # the training rows (gap 5) are not the evaluation's
    assert summary.overestimation_gaps(df, 0.0)["gap"].tolist() == pytest.approx([5.0, 5.0])
    # the figure and the printed table on the evaluation episodes: one point per evaluation
    data = plot_overestimation.overestimation_data(df, phase="eval")
    gap = data[data["quantity"] == "gap"].sort_values(["unit", "step"])
    assert gap["step"].tolist() == [100, 200, 300, 400] * 2 and gap["value"].tolist() == [9, 1, 2, 3, 9, 0, 0, 0]
    out = tmp_path / "over"
    assert plot_overestimation.main([str(tmp_path / "r"), "--phase", "eval", "--last-evals", "3", "--n-boot", "50",
                                     "--formats", "png", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "each seed's last 3" in printed and "| Toy-v0 | dqn | 2 | 2.00 | 1.00 | 1.00 [" in printed
    assert (tmp_path / "over.png").read_bytes()[:8] == PNG_SIGNATURE
    # runs without estimates on their evaluations: a one-line error naming what is missing
    write_run(tmp_path / "plain" / "r", "dqn", [0], {100: [1.0]}, train=[(0, 50, 1.0, 2.0, 1.0)], total_steps=100)
    with pytest.raises(SystemExit, match="no evaluation rows with q_estimate and mc_return"):
        plot_overestimation.plot_overestimation(load_returns([tmp_path / "plain"]), phase="eval")


# --- summary statistics that hold up ------------------------------------------------------------------------

def test_sustained_crossing_on_a_hand_made_curve():
    c = pd.DataFrame({"step": [100, 200, 300, 400, 500, 600], "return": [480.0, 300, 476, 490, 500, 470]})
    assert steps_to_threshold(c, 475.0) == 100                 # one lucky evaluation
    assert steps_to_threshold(c, 475.0, sustain=3) == 300      # 300, 400, 500 all reach it
    assert np.isnan(steps_to_threshold(c, 475.0, sustain=4))   # never four in a row
    end = pd.DataFrame({"step": [100, 200, 300], "return": [480.0, 100, 490]})
    assert steps_to_threshold(end, 475.0, sustain=3) == 300    # near the end: all that are left
    gap = pd.DataFrame({"step": [100, 200, 300], "return": [480.0, np.nan, 490]})
    assert steps_to_threshold(gap, 475.0, sustain=2) == 300    # a missing value does not reach it
    with pytest.raises(ValueError):
        steps_to_threshold(c, 475.0, sustain=0)


def test_final_return_is_the_mean_of_the_last_k_evaluations(tmp_path):
    # 7 evaluations of 2 seeds; seed 0 ends 10, 20, 30, 40, 50 and seed 1 ends at 0 except one lucky 100.
    evals = {100 * i: [10.0 * (i - 2), 0.0] for i in range(1, 8)}
    evals[700] = [50.0, 100.0]
    write_run(tmp_path / "r", "dqn", [0, 1], evals, total_steps=700)
    df = load_returns([tmp_path])
    assert summary.LAST_EVALS == 5
    scores = summary.final_scores(df).set_index("unit")["score"]
    assert scores[f"{tmp_path / 'r'}#0"] == pytest.approx((10 + 20 + 30 + 40 + 50) / 5)
    assert scores[f"{tmp_path / 'r'}#1"] == pytest.approx(100 / 5)
    one = summary.final_scores(df, last_evals=1).set_index("unit")["score"]
    assert one.tolist() == [50.0, 100.0]
    table, _ = summary.summarize(df, reps=100)
    assert table["mean"].iloc[0] == pytest.approx((30 + 20) / 2)


def test_duplicated_rows_are_detected_and_reported(tmp_path):
    run = write_run(tmp_path / "r", "dqn", [0, 1], {100: [1.0, 2.0], 200: [3.0, 4.0]}, total_steps=200)
    with open(run / "returns.csv", "a") as f:  # a second writer: the same rows again, one of them different
        f.write("dqn,Toy-v0,0,eval,200,1,3.0,10,,,2.0\ndqn,Toy-v0,1,eval,200,1,99.0,10,,,2.0\n")
    with pytest.warns(RunWarning) as record:
        df = load_returns([run])
    message = " ".join(str(w.message) for w in record)
    assert "2 rows repeat the (seed, phase, step, episode)" in message and "1 of them with different values" in message
    assert len(df) == 4 and not df.duplicated(["unit", "phase", "step", "episode"]).any()
    assert df[(df["seed"] == 1) & (df["step"] == 200)]["return"].tolist() == [4.0]  # the first is kept


def test_non_finite_returns_are_reported_per_unit_never_dropped(tmp_path, capsys):
    run = write_run(tmp_path / "r", "dqn", [0, 1, 2], {100: [1.0, 1.0, 1.0], 200: [2.0, 2.0, 2.0]}, total_steps=200)
    text = (run / "returns.csv").read_text()
    text = text.replace("dqn,Toy-v0,1,eval,200,1,2.0", "dqn,Toy-v0,1,eval,200,1,nan")
    text = text.replace("dqn,Toy-v0,2,eval,200,1,2.0", "dqn,Toy-v0,2,eval,200,1,inf")
    (run / "returns.csv").write_text(text)
    with pytest.warns(RunWarning) as record:
        df = load_returns([run])
    messages = [str(w.message) for w in record]
    assert any(f"{run}#1: 1 returns missing or non-finite (eval at step 200: nan)" in m for m in messages)
    assert any(f"{run}#2: 1 returns missing or non-finite (eval at step 200: inf)" in m for m in messages)
    assert len(df) == 6  # kept
    with pytest.warns(RunWarning, match="final return not computed"):
        table, _ = summary.summarize(df, reps=100, last_evals=1)
    row = table.iloc[0]
    assert row["seeds"] == 1 and row["nonfinite"] == 2 and row["mean"] == 2.0  # never the earlier evaluation's 1.0
    assert "1 (+2 non-finite)" in summary.to_markdown(table, _)


def test_a_missing_evaluation_is_not_replaced_by_an_earlier_one(tmp_path):
    run = write_run(tmp_path / "r", "dqn", [0, 1], {100: [1.0, 1.0], 200: [2.0, 2.0], 300: [3.0, 3.0]},
                    total_steps=300)
    text = (run / "returns.csv").read_text().replace("dqn,Toy-v0,1,eval,300,1,3.0,10,,,3.0\n", "")
    (run / "returns.csv").write_text(text)  # seed 1 finished (metrics.csv) but its last evaluation is gone
    with pytest.warns(RunWarning, match="evaluation at step 300 missing"):
        scores = summary.final_scores(load_returns([run]), last_evals=1).set_index("unit")
    assert scores.loc[f"{run}#0", "score"] == 3.0
    assert np.isnan(scores.loc[f"{run}#1", "score"]) and "step 300 missing" in scores.loc[f"{run}#1", "note"]


@pytest.mark.parametrize("module, args, key", [
    (summary, ["--last-evals", "0"], "--last-evals"), (summary, ["--reps", "0"], "--reps"),
    (summary, ["--sustain", "-1"], "--sustain"), (summary, ["--gap-from", "1.5"], "--gap-from"),
    (summary, ["--reps", "many"], "--reps"), (plot_curves, ["--points", "0"], "--points"),
    (plot_curves, ["--ci", "150"], "--ci"), (plot_curves, ["--n-boot", "0"], "--n-boot"),
    (plot_overestimation, ["--exclude-length", "0"], "--exclude-length"),
    (summary, ["--threshold", "CartPole-v1=lots"], "--threshold")])
def test_out_of_range_options_get_a_one_line_error(tmp_path, capsys, module, args, key):
    run = write_run(tmp_path / "r", "dqn", [0], {100: [1.0]}, total_steps=100)
    with pytest.raises(SystemExit) as exit_info:
        module.main([str(run), *args])
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code not in (0, None)
    err = err or str(exit_info.value.code)
    assert len(err.splitlines()) == 1 and key in err and "error" in err
    assert not (run / "analysis").exists()


def test_outputs_go_next_to_the_runs_and_are_printed(tmp_path, capsys):
    sweep = tmp_path / "sweep"
    for agent in ("dqn", "double_dqn"):
        write_run(sweep / f"0_{agent}", agent, [0, 1], {100: [1.0, 2.0], 200: [3.0, 4.0]}, total_steps=200,
                  train=[(s, t, 1.0, 2.0, 1.0) for s in (0, 1) for t in (50, 150)])
    assert summary.main([str(sweep), "--reps", "50"]) == 0
    assert plot_curves.main([str(sweep), "--n-boot", "50", "--formats", "png"]) == 0
    assert plot_overestimation.main([str(sweep / "0_dqn"), "--n-boot", "50", "--formats", "png"]) == 0
    out = capsys.readouterr().out
    for path in (sweep / "analysis" / "summary.md", sweep / "analysis" / "summary.csv",
                 sweep / "analysis" / "curves.png", sweep / "0_dqn" / "analysis" / "overestimation.png"):
        assert path.exists() and f"wrote {path}" in out


def test_plot_curves_without_evaluations_suggests_phase_train(tmp_path, capsys):
    run = write_run(tmp_path / "r", "dqn", [0], train=[(0, 10, 1.0, 0.0, 0.0), (0, 20, 2.0, 0.0, 0.0)],
                    total_steps=20)
    with pytest.raises(SystemExit) as exit_info:
        plot_curves.main([str(run)])
    assert "--phase train" in str(exit_info.value.code)
    assert plot_curves.main([str(run), "--phase", "train", "--n-boot", "20", "--formats", "png"]) == 0


def _legend_colours(legend) -> dict[str, str]:
    from matplotlib.colors import to_hex
    return {t.get_text(): to_hex(h.get_color()) for t, h in zip(legend.get_texts(), legend.legend_handles)
            if hasattr(h, "get_color")}


def test_each_algorithm_has_one_colour_in_every_figure(tmp_path):
    import matplotlib.pyplot as plt
    from analysis.common import BASE_COLOURS, colour_of, palette
    p1 = palette(["dqn", "dqn [buffer_size=64]", "qtable"])
    p2 = palette(["dqn [buffer_size=64]", "double_dqn", "dqn [target_sync.every=1]", "dqn"])
    assert p1["dqn"] == p2["dqn"] == BASE_COLOURS["dqn"]
    assert p1["dqn [buffer_size=64]"] == p2["dqn [buffer_size=64]"] == colour_of("dqn [buffer_size=64]")
    assert len(set(p2.values())) == len(p2)
    # the same label drawn by two scripts, among different company, gets the same colour
    train = [(s, t, 1.0, 2.0, 1.0) for s in (0, 1) for t in (50, 150)]
    write_run(tmp_path / "a" / "dqn", "dqn", [0, 1], {100: [1.0, 2.0], 200: [3.0, 4.0]}, total_steps=200, train=train)
    write_run(tmp_path / "a" / "norep", "dqn", [0, 1], {100: [1.0, 2.0], 200: [3.0, 4.0]}, total_steps=200,
              train=train, overrides=["buffer_size=64"])
    write_run(tmp_path / "a" / "ddqn", "double_dqn", [0, 1], {100: [1.0, 2.0], 200: [3.0, 4.0]}, total_steps=200,
              train=train)
    g, _ = plot_curves.plot_curves(load_returns([tmp_path / "a"]), n_boot=20)
    curves = {k.split(" (n=")[0]: v for k, v in _legend_colours(g.legend).items()}
    plt.close(g.figure)
    fig, _ = plot_overestimation.plot_overestimation(load_returns([tmp_path / "a" / "norep", tmp_path / "a" / "dqn"]),
                                                     n_boot=20)
    over = _legend_colours(fig.axes[0].get_legend())
    plt.close(fig)
    assert curves["dqn [buffer_size=64]"] == over["dqn [buffer_size=64]"] == colour_of("dqn [buffer_size=64]")
    assert curves["dqn"] == over["dqn"] == BASE_COLOURS["dqn"] and curves["double_dqn"] == BASE_COLOURS["double_dqn"]


# --- smoke test on a tiny real sweep -------------------------------------------------------------------

def is_png(path: Path) -> bool:
    return path.stat().st_size > 1000 and path.read_bytes()[:8] == PNG_SIGNATURE


def test_scripts_on_a_tiny_real_sweep(tmp_path):
    sweep = tmp_path / "sweep"
    env = {**os.environ, "HYDRA_FULL_ERROR": "1"}
    subprocess.run([sys.executable, "-m", "rlzoo", "-m", "agent=dqn,double_dqn", "total_steps=300",
                    "learning_starts=100", "eval_every=150", "eval_episodes=2", "n_seeds=2", "progress=false",
                    "checkpoint_every=0", "log_every=100", "network.hidden_sizes=[16]", f"hydra.sweep.dir={sweep}"],
                   cwd=ROOT, env=env, check=True, capture_output=True, timeout=120)
    assert len(find_run_dirs([sweep])) == 2
    assert set(load_metrics([sweep])["agent"]) == {"dqn", "double_dqn"}

    out = tmp_path / "fig" / "curves"
    assert plot_curves.main([str(sweep), "--phase", "both", "--out", str(out), "--n-boot", "100"]) == 0
    assert is_png(out.with_suffix(".png")) and out.with_suffix(".pdf").read_bytes()[:5] == b"%PDF-"
    over = tmp_path / "fig" / "over"
    assert plot_overestimation.main([str(sweep), "--out", str(over), "--n-boot", "100"]) == 0
    assert is_png(over.with_suffix(".png"))
    assert summary.main([str(sweep), "--out", str(tmp_path / "summary"), "--reps", "200"]) == 0
    table = pd.read_csv(tmp_path / "summary.csv")
    assert set(table["label"]) == {"dqn", "double_dqn"} and (table["seeds"] == 2).all()
    assert (tmp_path / "summary.md").read_text().startswith("| env | algorithm |")

    curves = aligned_curves(load_returns([sweep]), "eval")
    assert sorted(curves["step"].unique()) == [150, 300]  # shared evaluation steps are kept as they are


def test_help(capsys):
    r = subprocess.run([sys.executable, "-m", "analysis.plot_curves", "--help"], cwd=ROOT, capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0 and "usage: python -m analysis.plot_curves" in r.stdout
    for module in (summary, plot_overestimation):
        with pytest.raises(SystemExit) as exit_info:
            module.main(["--help"])
        assert exit_info.value.code == 0 and "usage:" in capsys.readouterr().out


# --- experiment configs --------------------------------------------------------------------------------

EXPERIMENTS = ("algorithms_cartpole", "algorithms_frozenlake", "overestimation_cartpole", "ablations_cartpole",
               "sync_cartpole")


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_experiment_configs_compose_for_every_sweep_value(name):
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    conf = str(ROOT / "conf")
    with initialize_config_dir(conf, version_base="1.3"):
        base = compose("config", overrides=[f"+experiment={name}"], return_hydra_config=True)
        params = OmegaConf.to_container(base.hydra.sweeper.params)
        assert params and base.n_seeds == 10
        for key, values in params.items():
            for value in str(values).split(","):
                cfg = compose("config", overrides=[f"+experiment={name}", f"{key}={value}"])
                assert OmegaConf.select(cfg, "agent._target_", default=None), (key, value)
                if key == "agent" and value == "qtable":
                    assert cfg.lr == 0.1 and cfg.buffer_size == 1  # the experiment keeps the Q-table's own settings
