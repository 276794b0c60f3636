"""Dueling on the corridor (Wang et al. 2016, section 4.1): the squared error of policy evaluation against the
exact Q^pi over training, single-stream vs dueling network, for each number of actions.

Reads each run's ``q_error.csv`` (one row per member every few steps: ``se``, the squared error summed over
states and actions, and ``mse``, its mean) and the number of actions from ``.hydra/config.yaml``
(``env.kwargs.n_actions``). Writes

- ``<out>.png``/``.pdf``: one panel per number of actions, the mean error over seeds against steps on log-log
  axes (the paper's Figure 3b-d) with 95% percentile-bootstrap bands over seeds;
- ``<out>.md`` and ``<out>.csv``: per number of actions and network, the final error (each seed's mean over its
  last ``--last`` rows) as mean [95% CI], the ratio single / dueling with its interval, and the probability
  that a dueling seed ends below a single-stream one.

Usage: ``python -m analysis.corridor <run or sweep dirs...> --out <base>``. Reads CSVs only.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from analysis.common import Parser, announce, bounded, default_out, palette, save_figure, setup_warnings
from analysis.load import RunWarning, find_run_dirs, read_config
from analysis.stats import mean_ci, probability_of_improvement

FILE = "q_error.csv"
COLUMNS = ("agent", "env", "seed", "step", "updates", "se", "mse")


def _warn(message: str) -> None:
    warnings.warn(message, RunWarning, stacklevel=2)


NAMES = {"dqn": "single-stream", "dueling_dqn": "dueling"}  # the two networks of the experiment, by agent


def load_errors(paths: Sequence[str | Path]) -> pd.DataFrame:
    """Every run's ``q_error.csv`` with ``n_actions`` (from its config) and ``net`` (the agent's display name);
    a row repeated by a resumed run is kept once (the last)."""
    parts = []
    for run in find_run_dirs(paths):
        f = run / FILE
        if not f.exists():
            _warn(f"{run}: no {FILE} (not a policy-evaluation run; skipped)")
            continue
        df = pd.read_csv(f)
        missing = set(COLUMNS) - set(df.columns)
        if missing:
            _warn(f"{f}: missing columns {sorted(missing)} (skipped)")
            continue
        n = ((read_config(run).get("env") or {}).get("kwargs") or {}).get("n_actions")
        if n is None:
            _warn(f"{run}: no env.kwargs.n_actions in .hydra/config.yaml (skipped)")
            continue
        df["n_actions"] = int(n)
        df["run"] = str(run)
        parts.append(df)
    if not parts:
        raise SystemExit(f"error: no {FILE} under {' '.join(map(str, paths))}")
    df = pd.concat(parts, ignore_index=True)
    df["net"] = df.agent.map(NAMES).fillna(df.agent)
    return df.drop_duplicates(["agent", "n_actions", "seed", "step"], keep="last")


def curve_band(group: pd.DataFrame, metric: str, reps: int, seed: int = 0) -> pd.DataFrame:
    """Per step: the mean over seeds of ``metric`` and a 95% percentile-bootstrap interval (seeds resampled)."""
    wide = group.pivot_table(index="step", columns="seed", values=metric)
    values = wide.to_numpy()
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, values.shape[1], size=(reps, values.shape[1]))
    boot = np.nanmean(values[:, idx], axis=2)  # [steps, reps]
    lo, hi = np.nanpercentile(boot, [2.5, 97.5], axis=1)
    return pd.DataFrame({"step": wide.index, "mean": np.nanmean(values, axis=1), "low": lo, "high": hi})


def final_errors(df: pd.DataFrame, metric: str, last: int) -> pd.DataFrame:
    """Each seed's final error: the mean of its last ``last`` rows."""
    tail = df.sort_values("step").groupby(["n_actions", "net", "seed"]).tail(last)
    return tail.groupby(["n_actions", "net", "seed"], as_index=False)[metric].mean()


def ratio_ci(x: np.ndarray, y: np.ndarray, reps: int, seed: int = 0) -> tuple[float, float, float]:
    """``mean(x) / mean(y)`` with a percentile-bootstrap interval (each sample's seeds resampled on its own)."""
    rng = np.random.default_rng(seed)
    boot = np.array([x[rng.integers(0, len(x), len(x))].mean() / y[rng.integers(0, len(y), len(y))].mean()
                     for _ in range(reps)])
    lo, hi = np.percentile(boot, [2.5, 97.5])
    return float(x.mean() / y.mean()), float(lo), float(hi)


def table(finals: pd.DataFrame, metric: str, reps: int) -> pd.DataFrame:
    rows = []
    for n, g in finals.groupby("n_actions"):
        row = {"n_actions": n}
        by = {net: grp[metric].to_numpy() for net, grp in g.groupby("net")}
        for net, x in sorted(by.items()):
            m, lo, hi = mean_ci(x, reps=reps)
            row.update({f"{net}": m, f"{net}_low": lo, f"{net}_high": hi, f"{net}_seeds": len(x)})
        if {"single-stream", "dueling"} <= by.keys():
            single, duel = by["single-stream"], by["dueling"]
            row["ratio"], row["ratio_low"], row["ratio_high"] = ratio_ci(single, duel, reps)
            # P(a dueling seed ends with a smaller error than a single-stream seed)
            row["p_dueling_lower"], row["p_low"], row["p_high"] = probability_of_improvement(-duel, -single, reps=reps)
        rows.append(row)
    return pd.DataFrame(rows)


def markdown(tab: pd.DataFrame, metric: str, last: int) -> str:
    what = {"se": "squared error summed over states and actions (the paper's SE)",
            "mse": "squared error averaged over states and actions"}[metric]
    lines = [f"Final {what}: each seed's mean over its last {last} logged points; mean over seeds [95% "
             "percentile-bootstrap CI]. Ratio: single-stream / dueling (> 1: dueling is closer to Q^pi). "
             "P(dueling lower): the probability that a dueling seed ends below a single-stream seed.", "",
             "| actions | single-stream | dueling | ratio single / dueling | P(dueling lower) | seeds |",
             "|---|---|---|---|---|---|"]
    for _, r in tab.iterrows():
        cell = lambda k: f"{r[k]:.3g} [{r[k + '_low']:.3g}, {r[k + '_high']:.3g}]" if k in r and pd.notna(r[k]) else "-"
        ratio = f"{r['ratio']:.2f} [{r['ratio_low']:.2f}, {r['ratio_high']:.2f}]" if "ratio" in r else "-"
        prob = f"{r['p_dueling_lower']:.2f} [{r['p_low']:.2f}, {r['p_high']:.2f}]" if "p_dueling_lower" in r else "-"
        seeds = "/".join(str(int(r[k])) for k in ("single-stream_seeds", "dueling_seeds") if k in r and pd.notna(r[k]))
        lines.append(f"| {int(r['n_actions'])} | {cell('single-stream')} | {cell('dueling')} | {ratio} | {prob} | {seeds} |")
    if tab.get("single-stream_seeds", pd.Series([10])).min() < 10:
        lines += ["", "With fewer than 10 seeds the intervals are rough."]
    return "\n".join(lines) + "\n"


def plot(df: pd.DataFrame, metric: str, reps: int, out: Path) -> list[Path]:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    counts = sorted(df.n_actions.unique())
    colours = palette(sorted(df.agent.unique()))
    fig, axes = plt.subplots(1, len(counts), figsize=(4.2 * len(counts), 3.4), squeeze=False, sharey=True)
    for ax, n in zip(axes[0], counts):
        for agent, g in sorted(df[df.n_actions == n].groupby("agent"), key=lambda kv: kv[0]):
            band = curve_band(g, metric, reps)
            name = NAMES.get(agent, agent)
            ax.plot(band.step, band["mean"], color=colours[agent], label=f"{name} ({g.seed.nunique()} seeds)",
                    linestyle="--" if agent == "dqn" else "-")
            ax.fill_between(band.step, band.low, band.high, color=colours[agent], alpha=0.25, linewidth=0)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_title(f"{n} actions")
        ax.set_xlabel("environment steps")
        ax.grid(True, which="both", alpha=0.3)
    axes[0][0].set_ylabel({"se": "SE to $Q^\\pi$ (sum over s, a)", "mse": "mean squared error to $Q^\\pi$"}[metric])
    axes[0][-1].legend(loc="lower left", fontsize=8)
    fig.tight_layout()
    paths = save_figure(fig, out)
    plt.close(fig)
    return paths


def main(argv: Sequence[str] | None = None) -> None:
    p = Parser(prog="python -m analysis.corridor", description=__doc__.split("\n\n")[0])
    p.add_argument("paths", nargs="+", help="run or sweep directories (or glob patterns)")
    p.add_argument("--out", help="output base path (default: <runs>/analysis/corridor)")
    p.add_argument("--metric", choices=["se", "mse"], default="se", help="se: summed (the paper's); mse: averaged")
    p.add_argument("--last", type=bounded(int, low=1), default=10, help="rows per seed averaged for the final error")
    p.add_argument("--reps", type=bounded(int, low=100), default=2000, help="bootstrap resamples")
    args = p.parse_args(argv)
    setup_warnings()
    out = Path(args.out) if args.out else default_out(args.paths, "corridor")
    df = load_errors(args.paths)
    tab = table(final_errors(df, args.metric, args.last), args.metric, args.reps)
    md = markdown(tab, args.metric, args.last)
    out.parent.mkdir(parents=True, exist_ok=True)
    md_path, csv_path = out.with_name(out.name + ".md"), out.with_name(out.name + ".csv")
    md_path.write_text(md)
    tab.to_csv(csv_path, index=False)
    print(md, end="")
    announce([*plot(df, args.metric, args.reps, out), md_path, csv_path])


if __name__ == "__main__":
    main()
