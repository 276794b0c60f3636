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
              overrides=(), total_steps: int | None = None, last_metric_step: int | None = None) -> Path:
    """A synthetic run directory: eval rows {step: [return per seed]}, train rows (seed, step, return, q, mc)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    lines = [HEADER]
    for seed, step, ret, q, mc in train:
        lines.append(f"{agent},Toy-v0,{seed},train,{step},1,{ret},10,{q},{mc},{step / 100}\n")
    for step, rets in (evals or {}).items():
        for seed, ret in zip(seeds, rets):
            lines.append(f"{agent},Toy-v0,{seed},eval,{step},1,{ret},10,,,{step / 100}\n")
    (run_dir / "returns.csv").write_text("".join(lines))
    if total_steps is not None:
        hydra = run_dir / ".hydra"
        hydra.mkdir(exist_ok=True)
        (hydra / "config.yaml").write_text(f"total_steps: {total_steps}\n")
        (hydra / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
        last = total_steps if last_metric_step is None else last_metric_step
        (run_dir / "metrics.csv").write_text(METRICS_HEADER + "".join(
            f"{agent},Toy-v0,{s},{last},1,0.1,1.0,1.0,0.1,100.0,1.0\n" for s in seeds))
    return run_dir


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
              overrides=["agent=dqn", "n_seeds=1", "threads=2"])  # speed settings: no label
    write_run(tmp_path / "norep", "dqn", [0], evals, total_steps=100,
              overrides=["agent=dqn", "buffer_size=64", "n_seeds=1", "+experiment=x"])
    write_run(tmp_path / "double", "double_dqn", [0], evals, total_steps=100, overrides=["agent=double_dqn"])
    df = load_returns([tmp_path])
    labels = df.drop_duplicates("run_dir").set_index("run_dir")["label"]
    assert labels[str(tmp_path / "full")] == "dqn"
    assert labels[str(tmp_path / "norep")] == "dqn [buffer_size=64, experiment=x]"
    assert labels[str(tmp_path / "double")] == "double_dqn"
    assert df["buffer_size"].dropna().unique().tolist() == ["64"]
    assert set(load_returns([tmp_path], label_keys=[])["label"]) == {"dqn", "double_dqn"}


def test_summary_known_answer(tmp_path):
    # 4 seeds of X at 10, 20, 30, 40 and 4 of Y at 0, 0, 0, 50 (final evaluation at step 200).
    write_run(tmp_path / "x", "x", [0, 1, 2, 3], {100: [0, 0, 0, 0], 200: [10, 20, 30, 40]}, total_steps=200)
    write_run(tmp_path / "y", "y", [0, 1, 2, 3], {100: [0, 0, 0, 0], 200: [0, 0, 0, 50]}, total_steps=200)
    df = load_returns([tmp_path])
    table, poi = summary.summarize(df, thresholds={"Toy-v0": 15.0}, reps=300)
    x = table.set_index("label").loc["x"]
    assert x["seeds"] == 4 and x["mean"] == pytest.approx(25.0) and x["iqm"] == pytest.approx(25.0)
    assert x["reached"] == 3 and x["steps_to_threshold_median"] == 200
    y = table.set_index("label").loc["y"]
    assert y["mean"] == pytest.approx(12.5) and y["iqm"] == pytest.approx(0.0) and y["reached"] == 1
    p = poi[(poi["x"] == "x") & (poi["y"] == "y")]["p"].iloc[0]
    assert p == pytest.approx((4 * 3 + 0) / 16)  # x beats each of the three zeros, never the 50
    md = summary.to_markdown(table, poi)
    assert "| Toy-v0 | x | 4 | 25.0 [" in md


def test_overestimation_gap(tmp_path):
    train = [(0, s, 1.0, q, 1.0) for s, q in ((10, 0.0), (60, 3.0), (100, 5.0))]
    write_run(tmp_path / "r", "dqn", [0], train=train, total_steps=100)
    gaps = summary.overestimation_gaps(load_returns([tmp_path]), gap_from=0.5)
    assert gaps["gap"].iloc[0] == pytest.approx(((3 - 1) + (5 - 1)) / 2)


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
