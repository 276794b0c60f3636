"""Summary table per environment and algorithm (label): final return (mean and interquartile mean,
stratified-bootstrap 95% confidence intervals over seeds), steps to reach a threshold, wall-clock
time, number of seeds, mean overestimation gap, and the pairwise probability of improvement.

Example::

    python -m analysis.summary results/sweeps/2026-11-24_15-29-42 --threshold CartPole-v1=475 --out results/summary
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from analysis.common import add_common_args, label_order, select, setup_warnings
from analysis.load import load_returns
from analysis.stats import iqm_ci, mean_ci, probability_of_improvement, steps_to_threshold

# Return at which an environment counts as solved (gymnasium's reward_threshold where it has one;
# the optimal return for the deterministic toy tasks).
DEFAULT_THRESHOLDS = {"CartPole-v1": 475.0, "CartPole-v0": 195.0, "Acrobot-v1": -100.0, "MountainCar-v0": -110.0,
                      "LunarLander-v3": 200.0, "FrozenLake-v1": 0.7, "FrozenLake8x8-v1": 0.85,
                      "CliffWalking-v1": -13.0, "CliffWalking-v0": -13.0, "Taxi-v3": 8.0, "Taxi-v4": 8.0}


def unit_curves(df: pd.DataFrame, phase: str, window: int = 10) -> pd.DataFrame:
    """Per unit, one value per step: the mean return of an evaluation (eval) or the trailing mean of
    the last ``window`` training episodes (train)."""
    d = df[df["phase"] == phase]
    if phase == "eval":
        return d.groupby(["env", "label", "unit", "step"], as_index=False)["return"].mean()
    d = d.sort_values(["unit", "step"]).copy()
    d["return"] = d.groupby("unit")["return"].transform(lambda s: s.rolling(window, min_periods=1).mean())
    return d[["env", "label", "unit", "step", "return"]]


def final_scores(df: pd.DataFrame, last_evals: int = 1, last_train: int = 10) -> pd.DataFrame:
    """Per unit: the final return (mean of its last ``last_evals`` evaluations, or, for units that were
    never evaluated, the mean of its last ``last_train`` training episodes) and which phase it came from."""
    rows = []
    for (env, label, unit), g in df.groupby(["env", "label", "unit"]):
        ev = g[g["phase"] == "eval"]
        if len(ev):
            steps = np.sort(ev["step"].unique())[-last_evals:]
            score, phase = ev[ev["step"].isin(steps)].groupby("step")["return"].mean().mean(), "eval"
        else:
            tr = g[g["phase"] == "train"].sort_values("step")
            score, phase = tr["return"].tail(last_train).mean(), "train"
        rows.append(dict(env=env, label=label, unit=unit, run_dir=g["run_dir"].iloc[0], score=score, phase=phase,
                         last_step=g["step"].max()))
    return pd.DataFrame(rows)


def overestimation_gaps(df: pd.DataFrame, gap_from: float = 0.5, exclude_length: int | None = None) -> pd.DataFrame:
    """Per unit: mean of ``q_estimate - mc_return`` over the training episodes that end after
    ``gap_from`` x the unit's last step (0: the whole run).

    ``exclude_length``: leave out episodes of at least this length, i.e. those cut by a time limit,
    whose ``mc_return`` misses the rewards after the cut and so underestimates the true return.
    """
    d = df[(df["phase"] == "train")].dropna(subset=["q_estimate", "mc_return"])
    if exclude_length:
        d = d[d["length"] < exclude_length]
    rows = []
    for (env, label, unit), g in d.groupby(["env", "label", "unit"]):
        late = g[g["step"] >= gap_from * g["step"].max()]
        rows.append(dict(env=env, label=label, unit=unit, gap=float((late["q_estimate"] - late["mc_return"]).mean()),
                         q_estimate=float(late["q_estimate"].mean()), mc_return=float(late["mc_return"].mean())))
    return pd.DataFrame(rows, columns=["env", "label", "unit", "gap", "q_estimate", "mc_return"])


def fmt_ci(est, lo, hi, digits=1) -> str:
    if not np.isfinite(est):
        return "—"
    return f"{est:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"


def summarize(df: pd.DataFrame, thresholds: dict[str, float] | None = None, last_evals: int = 1,
              gap_from: float = 0.5, reps: int = 2000, labels=None, exclude_length: int | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The summary table and the probability-of-improvement table (both tidy DataFrames)."""
    thresholds = {**DEFAULT_THRESHOLDS, **(thresholds or {})}
    finals = final_scores(df, last_evals)
    gaps = overestimation_gaps(df, gap_from, exclude_length)
    order = label_order(df, labels)
    rows = []
    for env in sorted(finals["env"].unique()):
        for label in [l for l in order if ((finals["env"] == env) & (finals["label"] == l)).any()]:
            f = finals[(finals["env"] == env) & (finals["label"] == label)]
            g = df[(df["env"] == env) & (df["label"] == label)]
            phase = "eval" if (f["phase"] == "eval").all() else ("train" if (f["phase"] == "train").all() else "mixed")
            scores = f["score"].to_numpy()
            m, iq = mean_ci(scores, reps=reps), iqm_ci(scores, reps=reps)
            thr = thresholds.get(env, np.nan)
            reached, steps = 0, []
            if np.isfinite(thr):
                curves = unit_curves(g, "eval" if phase != "train" else "train")
                for _, c in curves.groupby("unit"):
                    s = steps_to_threshold(c, thr)
                    reached += int(np.isfinite(s))
                    steps.append(s if np.isfinite(s) else np.inf)
            med = float(np.median(steps)) if steps else np.nan
            run_time = g.groupby("run_dir")["time"].max()
            gp = gaps[(gaps["env"] == env) & (gaps["label"] == label)]["gap"].dropna().to_numpy()
            gap = mean_ci(gp, reps=reps) if len(gp) else (np.nan, np.nan, np.nan)
            rows.append(dict(env=env, label=label, seeds=len(f), phase=phase, last_step=int(f["last_step"].max()),
                             mean=m[0], mean_lo=m[1], mean_hi=m[2], iqm=iq[0], iqm_lo=iq[1], iqm_hi=iq[2],
                             threshold=thr, steps_to_threshold_median=med, reached=reached,
                             wall_clock_s=float(run_time.mean()), runs=len(run_time),
                             overestimation_gap=gap[0], gap_lo=gap[1], gap_hi=gap[2]))
    table = pd.DataFrame(rows)
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


def to_markdown(table: pd.DataFrame, poi: pd.DataFrame) -> str:
    lines = ["| env | algorithm | seeds | final return: mean [95% CI] | IQM [95% CI] | steps to threshold (median) "
             "| wall-clock per run | overestimation gap [95% CI] |",
             "|---|---|---|---|---|---|---|---|"]
    for r in table.itertuples():
        if np.isfinite(r.threshold):
            med = "not reached" if not np.isfinite(r.steps_to_threshold_median) else f"{r.steps_to_threshold_median:,.0f}"
            thr = f"≥ {r.threshold:g}: {med} ({r.reached}/{r.seeds} reached)"
        else:
            thr = "—"
        phase = "" if r.phase == "eval" else f" ({r.phase})"
        lines.append(f"| {r.env} | {r.label} | {r.seeds} | {fmt_ci(r.mean, r.mean_lo, r.mean_hi)}{phase} | "
                     f"{fmt_ci(r.iqm, r.iqm_lo, r.iqm_hi)} | {thr} | {r.wall_clock_s:,.0f} s ({r.runs} run(s)) | "
                     f"{fmt_ci(r.overestimation_gap, r.gap_lo, r.gap_hi, 2)} |")
    if len(poi):
        lines += ["", "Probability of improvement P(X > Y) [95% CI] (rows X, columns Y):", ""]
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
        if not sep:
            raise SystemExit(f"summary: error: --threshold expects ENV=VALUE, got {item!r}")
        out[env] = float(value)
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m analysis.summary", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_common_args(p)
    p.add_argument("--threshold", nargs="*", default=[], metavar="ENV=VALUE",
                   help="return threshold per environment for 'steps to threshold' "
                        f"(defaults: {', '.join(f'{k}={v:g}' for k, v in DEFAULT_THRESHOLDS.items())})")
    p.add_argument("--last-evals", type=int, default=1,
                   help="final return = mean over the last this many evaluations of each seed")
    p.add_argument("--gap-from", type=float, default=0.5,
                   help="overestimation gap over training episodes after this fraction of each seed's run")
    p.add_argument("--exclude-length", type=int, default=None, metavar="L",
                   help="overestimation gap without episodes of length >= L (time-limit cuts, e.g. 500 on CartPole)")
    p.add_argument("--reps", type=int, default=2000, help="bootstrap resamples")
    p.add_argument("--include-unfinished", action="store_true",
                   help="also summarise seeds that did not reach total_steps")
    p.add_argument("--out", default="results/summary", help="writes <out>.md, <out>.csv, <out>_improvement.csv")
    args = p.parse_args(argv)
    setup_warnings()
    df = select(load_returns(args.paths, args.label_keys), args.labels, args.envs)
    if not args.include_unfinished and len(df):
        df = df[df["finished"]]
    if df.empty:
        raise SystemExit("summary: error: no finished runs to summarise (see warnings; --include-unfinished)")
    table, poi = summarize(df, parse_thresholds(args.threshold), args.last_evals, args.gap_from, args.reps, args.labels,
                           args.exclude_length)
    md = to_markdown(table, poi)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_name(out.name + ".md").write_text(md)
    table.to_csv(out.with_name(out.name + ".csv"), index=False)
    poi.to_csv(out.with_name(out.name + "_improvement.csv"), index=False)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
