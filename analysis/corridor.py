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


# --- the report's claims (analysis.report imports report_claims) ----------------------------------------------------

LAST = 10  # logged points per seed averaged for its final error (as in main's default)
REPS = 2000


def _report_errors(runs) -> pd.DataFrame | None:
    """The SE rows of the report's policy-evaluation runs (those with a q_error.csv), loaded once per Runs."""
    cached = getattr(runs, "_corridor_errors", False)
    if cached is not False:
        return cached
    dirs = [d for d in runs.run_dirs if (Path(d) / FILE).exists()]
    df = None
    if dirs:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RunWarning)
            try:
                df = load_errors(dirs)
            except SystemExit:
                df = None
    if df is not None:
        df = df[df.net.isin(["single-stream", "dueling"])]
        df = df if df.net.nunique() == 2 else None
    runs._corridor_errors = df
    return df


def _out(out_dir, key: str) -> Path:
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    return Path(out_dir) / key


def _arms(df: pd.DataFrame) -> dict[int, dict[str, np.ndarray]]:
    """Per number of actions with both networks: each network's final SE per seed."""
    finals = final_errors(df, "se", LAST)
    out = {}
    for n, g in finals.groupby("n_actions"):
        by = {net: grp["se"].to_numpy(dtype=float) for net, grp in g.groupby("net")}
        if {"single-stream", "dueling"} <= by.keys():
            out[int(n)] = by
    return out


def growth_ci(arms: dict[int, dict[str, np.ndarray]], reps: int = REPS, seed: int = 0) -> tuple[float, float, float]:
    """How much the gap ``mean(single) - mean(dueling)`` grows from the fewest to the most actions, with a
    percentile-bootstrap interval (the seeds of each of the four samples resampled on their own)."""
    lo_n, hi_n = min(arms), max(arms)
    samples = [arms[hi_n]["single-stream"], arms[hi_n]["dueling"], arms[lo_n]["single-stream"], arms[lo_n]["dueling"]]
    point = (samples[0].mean() - samples[1].mean()) - (samples[2].mean() - samples[3].mean())
    rng = np.random.default_rng(seed)
    boot = np.empty(reps)
    for r in range(reps):
        m = [x[rng.integers(0, len(x), len(x))].mean() for x in samples]
        boot[r] = (m[0] - m[1]) - (m[2] - m[3])
    lo, hi = np.percentile(boot, [2.5, 97.5])
    return float(point), float(lo), float(hi)


def gap_figure(arms: dict[int, dict[str, np.ndarray]], out: Path) -> list[Path]:
    """The gap single - dueling (left) and the ratio single / dueling (right) against the number of actions."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from analysis.stats import difference_ci

    ns = sorted(arms)
    gaps = [difference_ci([arms[n]["single-stream"]], [arms[n]["dueling"]], reps=REPS) for n in ns]
    ratios = [ratio_ci(arms[n]["single-stream"], arms[n]["dueling"], REPS) for n in ns]
    fig, axes = plt.subplots(1, 2, figsize=(8.4, 3.4))
    for ax, values, name, ref in ((axes[0], gaps, "SE single-stream − dueling", 0.0),
                                  (axes[1], ratios, "SE single-stream / dueling", 1.0)):
        est = np.array([v[0] for v in values])
        err = np.array([[v[0] - v[1] for v in values], [v[2] - v[0] for v in values]])
        ax.errorbar(ns, est, yerr=err, marker="o", capsize=4, color="tab:green")
        ax.axhline(ref, color="0.5", lw=0.8, ls=":")
        ax.set(xlabel="actions", ylabel=name, xticks=ns)
        ax.grid(True, alpha=0.3)
    fig.suptitle("Final SE to $Q^\\pi$: 95% bootstrap intervals over seeds", fontsize=9)
    fig.tight_layout()
    paths = save_figure(fig, out, ("png",))
    plt.close(fig)
    return paths


def _seed_table(arms) -> str:
    rows = ["| actions | single-stream: SE [95% CI] | dueling: SE [95% CI] | single − dueling [95% CI] | "
            "single / dueling [95% CI] | seeds |", "|---|---|---|---|---|---|"]
    from analysis.stats import difference_ci
    for n in sorted(arms):
        s, d = arms[n]["single-stream"], arms[n]["dueling"]
        cell = lambda v: f"{v[0]:.3g} [{v[1]:.3g}, {v[2]:.3g}]"  # noqa: E731
        rows.append(f"| {n} | {cell(mean_ci(s, reps=REPS))} | {cell(mean_ci(d, reps=REPS))} | "
                    f"{cell(difference_ci([s], [d], reps=REPS))} | {cell(ratio_ci(s, d, REPS))} | "
                    f"{len(s)}/{len(d)} |")
    return "\n".join(rows)


def report_claims() -> list:
    from analysis.report import Claim, Effect, Evidence, ROUGH_BELOW
    from analysis.stats import difference_ci

    common = dict(paper="Wang et al. 2016, Dueling Network Architectures for Deep Reinforcement Learning, section "
                        "4.1 and Figure 3",
                  testbed="policy evaluation on the corridor (`+experiment=dueling_corridor`: 68 states, 5, 10 "
                          "and 20 actions of which the extra ones are no-ops; Expected-SARSA targets under an "
                          "epsilon-greedy policy with epsilon 0.001; each number of actions is a stratum)",
                  agents="dueling vs single-stream network")

    class Lower(Claim):
        def evaluate(self, runs, out_dir, colours):
            df = _report_errors(runs)
            arms = _arms(df) if df is not None else {}
            if not arms:
                return None
            ns = sorted(arms)
            est, lo, hi = difference_ci([arms[n]["dueling"] for n in ns], [arms[n]["single-stream"] for n in ns],
                                        reps=REPS)
            enough = any(len(a["dueling"]) >= 2 and len(a["single-stream"]) >= 2 for a in arms.values())
            notes = [f"Per seed: the mean of its last {LAST} logged SE values (the squared error to the exact "
                     "Q^pi, summed over states and actions). The effect averages the numbers of actions."]
            if min(min(len(a["dueling"]), len(a["single-stream"])) for a in arms.values()) < ROUGH_BELOW:
                notes.append(f"Fewer than {ROUGH_BELOW} seeds: the intervals are rough.")
            figures = plot(df, "se", 500, _out(out_dir, self.key))
            return Evidence(Effect(est, lo, hi, -1, "final SE: dueling minus single-stream", enough),
                            _seed_table(arms), [f for f in figures if f.suffix == ".png"], notes)

    class Grows(Claim):
        def evaluate(self, runs, out_dir, colours):
            df = _report_errors(runs)
            arms = _arms(df) if df is not None else {}
            if len(arms) < 2:
                return None
            est, lo, hi = growth_ci(arms)
            lo_n, hi_n = min(arms), max(arms)
            ratios = {n: ratio_ci(arms[n]["single-stream"], arms[n]["dueling"], REPS) for n in (lo_n, hi_n)}
            enough = all(len(arms[n][k]) >= 2 for n in (lo_n, hi_n) for k in ("single-stream", "dueling"))
            notes = [f"The gap in SE units grows with the error itself, which grows with the number of actions "
                     f"(more Q-values to sum): as a ratio, single / dueling is "
                     f"{ratios[lo_n][0]:.2f} [{ratios[lo_n][1]:.2f}, {ratios[lo_n][2]:.2f}] at {lo_n} actions and "
                     f"{ratios[hi_n][0]:.2f} [{ratios[hi_n][1]:.2f}, {ratios[hi_n][2]:.2f}] at {hi_n}; the "
                     "ratio's intervals say whether the relative advantage grows too."]
            return Evidence(Effect(est, lo, hi, +1, f"(single − dueling) at {hi_n} actions minus at {lo_n}", enough),
                            _seed_table(arms), gap_figure(arms, _out(out_dir, self.key)), notes)

    return [
        Lower("dueling_corridor", "Dueling evaluates a policy faster than a single-stream network",
              "The dueling network learns V(s) in a stream of its own, so every update improves the values of all "
              "actions; in policy evaluation on the corridor its error to Q^pi falls faster than a single-stream "
              "network's.", metric=f"final SE to the exact Q^pi (each seed's mean over its last {LAST} logged "
              "points)", figure_text="SE to Q^pi over training, per number of actions (95% bootstrap bands)",
              **common),
        Grows("dueling_corridor_actions", "Dueling's advantage grows with the number of actions",
              "The more (redundant) actions, the larger the dueling network's advantage: with 5, 10 and 20 actions "
              "the gap between the two networks widens.", metric="the gap in final SE (single-stream minus "
              "dueling) at the most actions minus that at the fewest",
              figure_text="the gap and the ratio between the networks against the number of actions", **common),
    ]


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
