"""Summary table per environment and algorithm (label): final return (mean and interquartile mean,
stratified-bootstrap 95% confidence intervals over seeds), steps to reach a threshold, wall-clock
time, number of seeds, mean overestimation gap, and the pairwise probability of improvement.

Example::

    python -m analysis.summary results/sweeps/2026-11-24_15-29-42 --threshold CartPole-v1=475   # -> <sweep>/analysis/summary.md
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from analysis.common import POSITIVE_INT, Parser, add_common_args, announce, bounded, label_order, select, setup_warnings
from analysis.load import RunWarning, load_returns, output_base, run_settings
from analysis.stats import iqm_ci, mean_ci, probability_of_improvement, steps_to_threshold

# Return at which an environment counts as solved (gymnasium's reward_threshold where it has one;
# the optimal return for the deterministic toy tasks).
DEFAULT_THRESHOLDS = {"CartPole-v1": 475.0, "CartPole-v0": 195.0, "Acrobot-v1": -100.0, "MountainCar-v0": -110.0,
                      "LunarLander-v3": 200.0, "FrozenLake-v1": 0.7, "FrozenLake8x8-v1": 0.85,
                      "CliffWalking-v1": -13.0, "CliffWalking-v0": -13.0, "Taxi-v3": 8.0, "Taxi-v4": 8.0}

# Final return: the mean of each seed's last LAST_EVALS evaluations. With the defaults (an evaluation of 10
# greedy episodes every 5% of the run) that is the last quarter of training and 50 episodes per seed: a seed
# whose policy still swings (CartPole DQN drops from 500 and recovers) is scored by where it ends up on
# average, not by one lucky or unlucky evaluation, and a seed still improving is not credited with its best.
LAST_EVALS = 5
# Steps to threshold: the first evaluation from which SUSTAIN consecutive evaluations (or all that are left, at
# the end of a run) reach the threshold, so that one lucky evaluation does not count as having learned it.
SUSTAIN = 3
# Tables mark labels with fewer seeds than this: their bootstrap intervals are rough.
ROUGH_BELOW = 10


def unit_curves(df: pd.DataFrame, phase: str, window: int = 10) -> pd.DataFrame:
    """Per unit, one value per step: the mean return of an evaluation (eval) or the trailing mean of
    the last ``window`` training episodes (train)."""
    d = df[df["phase"] == phase]
    if phase == "eval":
        return d.groupby(["env", "label", "unit", "step"], as_index=False)["return"].mean()
    d = d.sort_values(["unit", "step"]).copy()
    d["return"] = d.groupby("unit")["return"].transform(lambda s: s.rolling(window, min_periods=1).mean())
    return d[["env", "label", "unit", "step", "return"]]


def final_scores(df: pd.DataFrame, last_evals: int = LAST_EVALS, last_train: int = 10) -> pd.DataFrame:
    """Per unit: the final return and which phase it came from.

    With evaluations: the mean over the unit's last ``last_evals`` *scheduled* evaluations of the mean
    return of each (a finished run's schedule comes from its config: every ``eval_every`` steps up to
    ``total_steps``; without a config, the steps at which its population was evaluated). An evaluation of
    that window that is missing, has fewer episodes than ``eval_episodes``, or holds a missing or non-finite
    return makes the final return NaN (or inf), with the reason in ``note`` and a warning: it is never
    replaced by an earlier evaluation. Units never evaluated: the mean of their last ``last_train``
    training episodes.
    """
    rows = []
    settings = {rd: run_settings(rd) for rd in df["run_dir"].unique()}
    evals = df[df["phase"] == "eval"]
    population_steps = evals.groupby("run_dir")["step"].unique().map(sorted).to_dict()
    population_episodes = evals.groupby(["run_dir", "unit", "step"]).size().groupby("run_dir").max().to_dict()
    for (env, label, unit), g in df.groupby(["env", "label", "unit"]):
        ev = g[g["phase"] == "eval"]
        run_dir, note = g["run_dir"].iloc[0], ""
        if len(ev):
            st = settings[run_dir]
            finished = bool(g["finished"].all())
            if finished and st["eval_every"] and st["total_steps"]:
                schedule = list(range(int(st["eval_every"]), int(st["total_steps"]) + 1, int(st["eval_every"])))
            elif finished:
                schedule = population_steps.get(run_dir, [])
            else:
                schedule = sorted(ev["step"].unique())
            window = schedule[-last_evals:]
            episodes = int(st["eval_episodes"] or population_episodes.get(run_dir, 1))
            per_step = ev.groupby("step")["return"].agg(["size", "mean"])
            problems = [f"evaluation at step {s} missing" for s in window if s not in per_step.index]
            problems += [f"evaluation at step {s} has {int(per_step.loc[s, 'size'])} of {episodes} episodes"
                         for s in window if s in per_step.index and per_step.loc[s, "size"] < episodes]
            if problems:
                score = float("nan")
                note = "; ".join(problems)
            else:
                score = float(per_step.loc[window, "mean"].mean())
                if not np.isfinite(score):
                    note = "missing or non-finite returns in its last evaluations"
            phase = "eval"
        else:
            tr = g[g["phase"] == "train"].sort_values("step")
            score, phase = float(tr["return"].tail(last_train).mean()), "train"
            if not np.isfinite(score):
                note = "missing or non-finite returns in its last training episodes"
        if note:
            warnings.warn(f"{unit}: final return not computed ({note}); not replaced by an earlier evaluation, "
                          "left out of the intervals and counted as non-finite", RunWarning)
        rows.append(dict(env=env, label=label, unit=unit, run_dir=run_dir, score=score, phase=phase,
                         last_step=g["step"].max(), note=note))
    return pd.DataFrame(rows, columns=["env", "label", "unit", "run_dir", "score", "phase", "last_step", "note"])


def overestimation_gaps(df: pd.DataFrame, gap_from: float = 0.5, exclude_length: int | None = None,
                        phase: str = "train") -> pd.DataFrame:
    """Per unit: mean of ``q_estimate - mc_return`` over the ``phase`` episodes (training by default) that
    end after ``gap_from`` x the unit's last step (0: the whole run).

    ``exclude_length``: leave out episodes of at least this length, i.e. those cut by a time limit,
    whose ``mc_return`` misses the rewards after the cut and so underestimates the true return.
    """
    d = df[(df["phase"] == phase)].dropna(subset=["q_estimate", "mc_return"])
    if exclude_length:
        d = d[d["length"] < exclude_length]
    rows = []
    for (env, label, unit), g in d.groupby(["env", "label", "unit"]):
        late = g[g["step"] >= gap_from * g["step"].max()]
        rows.append(dict(env=env, label=label, unit=unit, gap=float((late["q_estimate"] - late["mc_return"]).mean()),
                         q_estimate=float(late["q_estimate"].mean()), mc_return=float(late["mc_return"].mean())))
    return pd.DataFrame(rows, columns=["env", "label", "unit", "gap", "q_estimate", "mc_return"])


def last_eval_gaps(df: pd.DataFrame, last_evals: int = LAST_EVALS) -> pd.DataFrame:
    """Per unit: the overestimation of the greedy policy, the mean of ``q_estimate - mc_return`` over the
    evaluation episodes of the unit's last ``last_evals`` evaluations that carry both (``q_estimate``: the mean
    of ``max_a Q(s, a)`` over an evaluation episode's states; ``mc_return``: the discounted return the greedy
    policy got from them), with the means of the two and the number of episodes used."""
    d = df[df["phase"] == "eval"]
    if "q_estimate" not in d or "mc_return" not in d:
        d = d.iloc[0:0]
    d = d.dropna(subset=["q_estimate", "mc_return"])
    rows = []
    for (env, label, unit), g in d.groupby(["env", "label", "unit"]):
        late = g[g["step"].isin(sorted(g["step"].unique())[-last_evals:])]
        rows.append(dict(env=env, label=label, unit=unit, gap=float((late["q_estimate"] - late["mc_return"]).mean()),
                         q_estimate=float(late["q_estimate"].mean()), mc_return=float(late["mc_return"].mean()),
                         episodes=len(late)))
    return pd.DataFrame(rows, columns=["env", "label", "unit", "gap", "q_estimate", "mc_return", "episodes"])


def fmt_ci(est, lo, hi, digits=1) -> str:
    if not np.isfinite(est):
        return "—"
    return f"{est:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"


def summarize(df: pd.DataFrame, thresholds: dict[str, float] | None = None, last_evals: int = LAST_EVALS,
              gap_from: float = 0.5, reps: int = 2000, labels=None, exclude_length: int | None = None,
              sustain: int = SUSTAIN) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The summary table and the probability-of-improvement table (both tidy DataFrames).

    Units whose final return is missing or non-finite (see :func:`final_scores`) are counted in
    ``nonfinite`` and left out of the intervals and of P(X > Y).
    """
    thresholds = {**DEFAULT_THRESHOLDS, **(thresholds or {})}
    all_finals = final_scores(df, last_evals)
    finals = all_finals[np.isfinite(all_finals["score"].to_numpy(dtype=float))]
    gaps = overestimation_gaps(df, gap_from, exclude_length)
    order = label_order(df, labels)
    rows = []
    nan3 = (np.nan, np.nan, np.nan)
    for env in sorted(all_finals["env"].unique()):
        for label in [l for l in order if ((all_finals["env"] == env) & (all_finals["label"] == l)).any()]:
            fa = all_finals[(all_finals["env"] == env) & (all_finals["label"] == label)]
            f = fa[np.isfinite(fa["score"].to_numpy(dtype=float))]
            g = df[(df["env"] == env) & (df["label"] == label)]
            phase = "eval" if (fa["phase"] == "eval").all() else ("train" if (fa["phase"] == "train").all() else "mixed")
            scores = f["score"].to_numpy()
            m, iq = (mean_ci(scores, reps=reps), iqm_ci(scores, reps=reps)) if len(scores) else (nan3, nan3)
            thr = thresholds.get(env, np.nan)
            reached, steps = 0, []
            if np.isfinite(thr):
                curves = unit_curves(g, "eval" if phase != "train" else "train")
                for _, c in curves.groupby("unit"):
                    s = steps_to_threshold(c, thr, sustain=sustain)
                    reached += int(np.isfinite(s))
                    steps.append(s if np.isfinite(s) else np.inf)
            med = float(np.median(steps)) if steps else np.nan
            run_time = g.groupby("run_dir")["time"].max()
            gp = gaps[(gaps["env"] == env) & (gaps["label"] == label)]["gap"].to_numpy(dtype=float)
            gp = gp[np.isfinite(gp)]
            gap = mean_ci(gp, reps=reps) if len(gp) else nan3
            rows.append(dict(env=env, label=label, seeds=len(f), nonfinite=len(fa) - len(f), phase=phase,
                             last_step=int(fa["last_step"].max()),
                             mean=m[0], mean_lo=m[1], mean_hi=m[2], iqm=iq[0], iqm_lo=iq[1], iqm_hi=iq[2],
                             threshold=thr, steps_to_threshold_median=med, reached=reached, units=len(steps),
                             wall_clock_s=float(run_time.mean()), runs=len(run_time),
                             overestimation_gap=gap[0], gap_lo=gap[1], gap_hi=gap[2]))
    table = pd.DataFrame(rows)
    table.attrs.update(last_evals=last_evals, sustain=sustain, reps=reps)
    poi = []
    envs = sorted(finals["env"].unique())
    for x in order:
        for y in order:
            if x == y:
                continue
            common = [e for e in envs if all(((finals["env"] == e) & (finals["label"] == l)).any() for l in (x, y))]
            cells = [(e, [e]) for e in common] + ([("all", common)] if len(common) > 1 else [])
            for name, es in cells:
                xs = [finals[(finals["env"] == e) & (finals["label"] == x)]["score"].to_numpy() for e in es]
                ys = [finals[(finals["env"] == e) & (finals["label"] == y)]["score"].to_numpy() for e in es]
                p = probability_of_improvement(xs, ys, reps=reps)
                poi.append(dict(env=name, x=x, y=y, p=p[0], p_lo=p[1], p_hi=p[2]))
    return table, pd.DataFrame(poi, columns=["env", "x", "y", "p", "p_lo", "p_hi"])


def method_note(last_evals: int = LAST_EVALS, sustain: int = SUSTAIN, reps: int = 2000) -> str:
    """The statistics, stated once below a table."""
    return (f"Final return: per seed, the mean over its last {last_evals} evaluation(s). Steps to threshold: per "
            f"seed, the first evaluation from which {sustain} consecutive evaluation(s) (or all that are left) "
            "reach the threshold; the median over seeds. Intervals: 95% percentile bootstrap over seeds "
            f"({reps:,} resamples, stratified by environment); IQM: the mean of the middle 50% of seeds.")


def to_markdown(table: pd.DataFrame, poi: pd.DataFrame) -> str:
    lines = ["| env | algorithm | seeds | final return: mean [95% CI] | IQM [95% CI] | steps to threshold (median) "
             "| wall-clock per run | overestimation gap [95% CI] |",
             "|---|---|---|---|---|---|---|---|"]
    rough = False
    for r in table.itertuples():
        if np.isfinite(r.threshold):
            med = "not reached" if not np.isfinite(r.steps_to_threshold_median) else f"{r.steps_to_threshold_median:,.0f}"
            thr = f"≥ {r.threshold:g}: {med} ({r.reached}/{r.units} reached)"
        else:
            thr = "—"
        phase = "" if r.phase == "eval" else f" ({r.phase})"
        seeds = f"{r.seeds}" + (f" (+{r.nonfinite} non-finite)" if r.nonfinite else "")
        if r.seeds < ROUGH_BELOW:
            seeds += " *"
            rough = True
        lines.append(f"| {r.env} | {r.label} | {seeds} | {fmt_ci(r.mean, r.mean_lo, r.mean_hi)}{phase} | "
                     f"{fmt_ci(r.iqm, r.iqm_lo, r.iqm_hi)} | {thr} | {r.wall_clock_s:,.0f} s ({r.runs} run(s)) | "
                     f"{fmt_ci(r.overestimation_gap, r.gap_lo, r.gap_hi, 2)} |")
    lines.append("")
    if rough:
        lines += [f"\\* fewer than {ROUGH_BELOW} seeds: the intervals are rough (percentile intervals run narrow "
                  "with few seeds).", ""]
    if table["nonfinite"].sum() if len(table) else 0:
        lines += ["Non-finite: seeds whose final return is missing or non-finite (listed on stderr), left out of "
                  "the intervals.", ""]
    lines += [method_note(**table.attrs) if table.attrs else method_note(), ""]
    if len(poi):
        lines += ["Probability of improvement P(X > Y) [95% CI] (rows X, columns Y):", ""]
        for env, g in poi.groupby("env", sort=False):
            labels = list(dict.fromkeys([*g["x"], *g["y"]]))
            lines += [f"**{env}**", "", "| X \\ Y | " + " | ".join(labels) + " |",
                      "|---|" + "---|" * len(labels)]
            for x in labels:
                cells = []
                for y in labels:
                    c = g[(g["x"] == x) & (g["y"] == y)]
                    cells.append("—" if c.empty else fmt_ci(c["p"].iloc[0], c["p_lo"].iloc[0], c["p_hi"].iloc[0], 2))
                lines.append(f"| {x} | " + " | ".join(cells) + " |")
            lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def parse_thresholds(items) -> dict[str, float]:
    out = {}
    for item in items or []:
        env, sep, value = item.rpartition("=")
        try:
            number = float(value)
        except ValueError:
            number = float("nan")
        if not sep or not env or not np.isfinite(number):
            raise SystemExit(f"python -m analysis.summary: error: --threshold expects ENV=NUMBER (e.g. CartPole-v1=475), "
                             f"got {item!r}")
        out[env] = number
    return out


def main(argv=None) -> int:
    p = Parser(prog="python -m analysis.summary", description=__doc__.split("\n\n")[0],
               formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_common_args(p)
    p.add_argument("--threshold", nargs="*", default=[], metavar="ENV=VALUE",
                   help="return threshold per environment for 'steps to threshold' "
                        f"(defaults: {', '.join(f'{k}={v:g}' for k, v in DEFAULT_THRESHOLDS.items())})")
    p.add_argument("--last-evals", type=POSITIVE_INT, default=LAST_EVALS, metavar="K",
                   help="final return = mean over the last K evaluations of each seed")
    p.add_argument("--sustain", type=POSITIVE_INT, default=SUSTAIN, metavar="M",
                   help="steps to threshold: the first evaluation from which M consecutive evaluations reach it "
                        "(1: the first evaluation that reaches it)")
    p.add_argument("--gap-from", type=bounded(float, 0.0, 1.0, high_open=True), default=0.5,
                   help="overestimation gap over training episodes after this fraction of each seed's run")
    p.add_argument("--exclude-length", type=POSITIVE_INT, default=None, metavar="L",
                   help="overestimation gap without episodes of length >= L (time-limit cuts, e.g. 500 on CartPole)")
    p.add_argument("--reps", type=POSITIVE_INT, default=2000, help="bootstrap resamples")
    p.add_argument("--include-unfinished", action="store_true",
                   help="also summarise seeds that did not reach total_steps")
    p.add_argument("--out", default=None,
                   help="writes <out>.md, <out>.csv, <out>_improvement.csv (default: analysis/summary in the runs' "
                        "common directory)")
    args = p.parse_args(argv)
    thresholds = parse_thresholds(args.threshold)
    setup_warnings()
    df = select(load_returns(args.paths, args.label_keys), args.labels, args.envs)
    if not args.include_unfinished and len(df):
        df = df[df["finished"]]
    if df.empty:
        raise SystemExit("python -m analysis.summary: error: no finished runs to summarise (see warnings; "
                         "--include-unfinished)")
    table, poi = summarize(df, thresholds, args.last_evals, args.gap_from, args.reps, args.labels,
                           args.exclude_length, args.sustain)
    md = to_markdown(table, poi)
    out = Path(args.out) if args.out else output_base(sorted(df["run_dir"].unique())) / "summary"
    out.parent.mkdir(parents=True, exist_ok=True)
    written = [out.with_name(out.name + ".md"), out.with_name(out.name + ".csv"),
               out.with_name(out.name + "_improvement.csv")]
    written[0].write_text(md)
    table.to_csv(written[1], index=False)
    poi.to_csv(written[2], index=False)
    print(md)
    announce(written)
    return 0


if __name__ == "__main__":
    sys.exit(main())
