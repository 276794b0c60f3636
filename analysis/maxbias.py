"""The maximisation-bias figure (Sutton and Barto 2018, Example 6.7, Figure 6.5) from ``returns.csv`` files.

On ``env=maxbias`` an episode that goes left from A lasts 2 steps (A -> B -> end) and one that goes right lasts
1, so each training episode's ``length`` says which way the agent went. Per label (algorithm) and episode index
``k`` (the k-th training episode of every seed) this script computes the percentage of seeds that went left,
with a 95% Wilson score interval (the seeds are independent, so the count is binomial), plots it against the
best an epsilon-greedy agent can do (left only when exploring: epsilon / 2, 5% at the book's epsilon = 0.1),
and tabulates the left-percentage over windows of episodes, with 95% percentile-bootstrap intervals over seeds.

    python -m analysis.maxbias results/reference/maxbias/runs --out results/reference/maxbias/maxbias

writes ``<out>.png`` and ``<out>.pdf`` (the figure), ``<out>_curve.csv`` (per label and episode: seeds, left %,
interval) and ``<out>.md`` / ``<out>.csv`` (the table). Reads CSVs only (through ``analysis.load``).
"""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from analysis.load import RunWarning, load_returns

Z95 = 1.959963984540054  # the standard normal's 97.5% quantile
WINDOWS = ((1, 10), (11, 50), (51, 100), (101, 200), (201, 300), (251, 300))
OVER_WINDOWS = ((11, 50), (251, 300))  # where the table also shows the logged overestimation
COLOURS = {"qtable": "tab:red", "double_qtable": "tab:blue", "dqn": "tab:orange", "double_dqn": "tab:cyan"}
NAMES = {"qtable": "Q-learning", "double_qtable": "Double Q-learning", "dqn": "DQN", "double_dqn": "Double DQN"}


def wilson_interval(successes: np.ndarray, n: np.ndarray, z: float = Z95) -> tuple[np.ndarray, np.ndarray]:
    """The Wilson score interval of a binomial proportion (``successes`` of ``n``), elementwise."""
    successes, n = np.asarray(successes, dtype=float), np.asarray(n, dtype=float)
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    low = np.where(successes == 0, 0.0, centre - half)  # exactly 0 and 1 at k = 0 and k = n (not 1e-17 off)
    return low, np.where(successes == n, 1.0, centre + half)


def left_matrix(df: pd.DataFrame, episodes: int) -> dict[str, pd.DataFrame]:
    """Per label, a (seed x episode) 0/1 table: did that seed's k-th training episode go left (length 2)?
    Seeds with fewer than ``episodes`` finished training episodes are left out, with a warning."""
    train = df[(df["phase"] == "train") & (df["episode"] <= episodes)]
    out = {}
    for label, rows in train.groupby("label", sort=False):
        table = rows.pivot_table(index="unit", columns="episode", values="length", aggfunc="first")
        complete = table.notna().all(axis=1) & (table.shape[1] == episodes)
        if not complete.all():
            warnings.warn(f"{label}: {int((~complete).sum())} of {len(table)} seeds have fewer than {episodes} "
                          "training episodes (left out; raise total_steps to 2 * episodes)", RunWarning)
        table = table[complete]
        if len(table):
            out[label] = (table >= 2).astype(int)
    return out


def left_curve(matrices: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """Per label and episode: seeds, left-percentage and its 95% Wilson interval (in percent)."""
    frames = []
    for label, m in matrices.items():
        k, n = m.sum(axis=0).to_numpy(), np.full(m.shape[1], len(m))
        low, high = wilson_interval(k, n)
        frames.append(pd.DataFrame({"label": label, "episode": m.columns.astype(int), "seeds": n,
                                    "left_pct": 100 * k / n, "ci_low": 100 * low, "ci_high": 100 * high}))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(
        columns=["label", "episode", "seeds", "left_pct", "ci_low", "ci_high"])


def bootstrap_mean_ci(x: np.ndarray, reps: int = 2000, seed: int = 0, ci: float = 0.95) -> tuple[float, float]:
    """Percentile-bootstrap interval of the mean of independent values ``x``."""
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, len(x), size=(reps, len(x)))].mean(axis=1)
    return tuple(np.quantile(means, [(1 - ci) / 2, (1 + ci) / 2]))


def window_table(matrices: dict[str, pd.DataFrame], windows=WINDOWS) -> pd.DataFrame:
    """Per label: seeds, the peak of the per-episode curve and where it is, and the left-percentage over each
    window of episodes as mean [95% bootstrap CI over seeds] (each seed's share of left episodes in the window
    is one independent value)."""
    rows = []
    for label, m in matrices.items():
        per_episode = 100 * m.mean(axis=0)
        row = {"label": label, "seeds": len(m), "peak_left_pct": float(per_episode.max()),
               "peak_episode": int(per_episode.idxmax())}
        for lo, hi in windows:
            cols = [c for c in m.columns if lo <= c <= hi]
            if not cols:
                continue
            share = 100 * m[cols].mean(axis=1).to_numpy()
            low, high = bootstrap_mean_ci(share)
            row[f"left_pct_{lo}_{hi}"] = float(share.mean())
            row[f"ci_{lo}_{hi}"] = f"[{low:.1f}, {high:.1f}]"
        rows.append(row)
    return pd.DataFrame(rows)


def overestimation_table(df: pd.DataFrame, episodes: int, windows=OVER_WINDOWS) -> pd.DataFrame:
    """Per label: the logged overestimation ``q_estimate - mc_return`` (mean over an episode's states of
    ``max_a Q(s, a)``, less the return that followed) over each window of episodes, as mean [95% bootstrap CI
    over seeds] of each seed's mean. Labels without the columns (``log_q_estimates=false``) are left out."""
    train = df[(df["phase"] == "train") & (df["episode"] <= episodes)]
    rows = []
    for label, g in train.groupby("label", sort=False):
        over = g["q_estimate"] - g["mc_return"]
        if over.isna().all():
            continue
        row = {"label": label}
        for lo, hi in windows:
            inside = g["episode"].between(lo, hi)
            per_seed = over[inside].groupby(g.loc[inside, "unit"]).mean().dropna().to_numpy()
            if len(per_seed):
                low, high = bootstrap_mean_ci(per_seed)
                row[f"over_{lo}_{hi}"] = float(per_seed.mean())
                row[f"over_ci_{lo}_{hi}"] = f"[{low:.3f}, {high:.3f}]"
        rows.append(row)
    return pd.DataFrame(rows)


def markdown(table: pd.DataFrame, optimal: float) -> str:
    windows = [c[len("left_pct_"):] for c in table.columns if c.startswith("left_pct_")]
    head = ["algorithm", "seeds", "peak (episode)"] + [f"episodes {w.replace('_', '-')}" for w in windows]
    overs = [c[len("over_"):] for c in table.columns if c.startswith("over_") and not c.startswith("over_ci_")]
    head += [f"overestimation, episodes {w.replace('_', '-')}" for w in overs]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for _, r in table.iterrows():
        cells = [NAMES.get(r["label"], r["label"]), str(r["seeds"]), f"{r['peak_left_pct']:.1f}% ({r['peak_episode']})"]
        cells += [f"{r[f'left_pct_{w}']:.1f}% {r[f'ci_{w}']}" for w in windows]
        cells += ["" if pd.isna(r.get(f"over_{w}")) else f"{r[f'over_{w}']:+.3f} {r[f'over_ci_{w}']}" for w in overs]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    lines.append(f"Left actions from A, in percent of episodes: mean over seeds [95% percentile-bootstrap CI over "
                 f"seeds]; the best epsilon-greedy behaviour goes left {100 * optimal:g}% of the time. The peak is "
                 "the highest per-episode percentage. Overestimation: the logged q_estimate - mc_return (an "
                 "episode's mean max_a Q(s, a) over its states, less the return that followed), mean over seeds "
                 "[95% bootstrap CI].")
    return "\n".join(lines) + "\n"


def plot(curve: pd.DataFrame, optimal: float, out: Path, labels: Sequence[str], colours: dict | None = None,
         formats: Sequence[str] = ("png", "pdf")) -> list[Path]:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for label in labels:
        c = curve[curve["label"] == label]
        colour = (colours or {}).get(label) or COLOURS.get(label)
        name = f"{NAMES.get(label, label)} ({int(c['seeds'].iloc[0])} seeds)"
        ax.plot(c["episode"], c["left_pct"], color=colour, lw=1.2, label=name)
        ax.fill_between(c["episode"], c["ci_low"], c["ci_high"], color=colour, alpha=0.2, lw=0)
    ax.axhline(100 * optimal, color="black", ls="--", lw=1, label=f"optimal ({100 * optimal:g}%)")
    ax.set_xlabel("episode")
    ax.set_ylabel("% left actions from A")
    ax.set_ylim(0, 100)
    ax.set_xlim(1, curve["episode"].max())
    ax.legend(frameon=False, loc="upper right")
    ax.set_title("Maximisation bias (Sutton & Barto, Example 6.7); bands: 95% Wilson", fontsize=9)
    fig.tight_layout()
    paths = [out.with_name(f"{out.name}.{ext}") for ext in formats]
    for path in paths:
        fig.savefig(path, dpi=150)
    plt.close(fig)
    return paths


# --- the report's claims (analysis.report imports report_claims) ----------------------------------------------------

EPISODES = 300  # the book's


def _maxbias_env(env: str) -> bool:
    return str(env).startswith("rlzoo/MaxBias")


def left_share(df: pd.DataFrame, first: int = 1, last: int = EPISODES) -> pd.DataFrame:
    """Per seed (unit): the percentage of its training episodes ``first``..``last`` that went left from A
    (length 2): ``[env, label, unit, score]``. A seed with fewer episodes uses those it has."""
    train = df[(df["phase"] == "train") & df["episode"].between(first, last)]
    g = (train["length"] >= 2).groupby([train["env"], train["label"], train["unit"]]).mean() * 100
    return g.rename("score").reset_index()[["env", "label", "unit", "score"]]


def late_overestimation(df: pd.DataFrame, first: int = 251, last: int = EPISODES) -> pd.DataFrame:
    """Per seed: the mean logged ``q_estimate - mc_return`` over its training episodes ``first``..``last``."""
    train = df[(df["phase"] == "train") & df["episode"].between(first, last)].dropna(subset=["q_estimate", "mc_return"])
    g = (train["q_estimate"] - train["mc_return"]).groupby([train["env"], train["label"], train["unit"]]).mean()
    return g.rename("score").reset_index()[["env", "label", "unit", "score"]]


def left_figure(df: pd.DataFrame, out: Path, colours: dict[str, str]) -> list[Path]:
    """The book's figure for the runs of one claim: % left from A per episode, 95% Wilson bands."""
    train = df[df["phase"] == "train"]
    if train.empty:
        return []
    episodes = int(min(EPISODES, train.groupby("unit")["episode"].max().min()))
    matrices = left_matrix(df, episodes)
    if not matrices:
        return []
    labels = sorted(matrices, key=lambda l: (list(NAMES).index(l) if l in NAMES else len(NAMES), l))
    return plot(left_curve(matrices), 0.05, Path(out), labels, colours, formats=("png",))


def report_claims() -> list:
    from analysis.report import Arm, Comparison, _with_replay

    online = lambda identity: not _with_replay(identity)  # noqa: E731 -- the book's agents learn from each step
    windows = (("left, episodes 11-50 (%)", lambda d: left_share(d, 11, 50), 1),
               ("left, episodes 251-300 (%)", lambda d: left_share(d, 251, 300), 1),
               ("overestimation, episodes 251-300", late_overestimation, 3))
    common = dict(paper="Sutton and Barto 2018, Reinforcement Learning: An Introduction (2nd ed.), section 6.7, "
                        "Example 6.7 and Figure 6.5; van Hasselt 2010, Double Q-learning",
                  metric=f"the percentage of the first {EPISODES} episodes that went left from A (the optimum "
                         "under epsilon-greedy with epsilon 0.1 is 5%)",
                  short=f"left, episodes 1-{EPISODES} (%)",
                  figure_text="% of episodes that went left from A, per episode (95% Wilson bands)",
                  sign=-1, envs=_maxbias_env, differ=("agent",), metric_fn=left_share, figure=left_figure,
                  extras=windows, digits=1)
    return [
        Comparison(
            key="maxbias_tabular", title="Double Q-learning removes the maximisation bias",
            statement="Q-learning's target takes the maximum over noisy estimates and so overestimates; on the "
                      "maximisation-bias MDP it learns to prefer the worse action (left, towards B's many noisy "
                      "actions), while Double Q-learning, whose two tables choose and value the next action "
                      "separately, is hardly misled.",
            testbed="the maximisation-bias MDP (`env=maxbias`: A with left/right, B with 10 actions whose "
                    "rewards are N(-0.1, 1)), the book's settings (`+experiment=maxbias`)",
            agents="Double Q-learning vs Q-learning, tables learning online from each step (no replay)",
            baseline=Arm("Q-learning", ("qtable",), online),
            treatment=Arm("Double Q-learning", ("double_qtable",), online), **common),
        Comparison(
            key="maxbias_dqn", title="Double DQN removes the maximisation bias with a network",
            statement="The same claim for the deep agents: Double DQN's target (the online network chooses, the "
                      "target network values) should go left from A less often than DQN's.",
            testbed="the maximisation-bias MDP with one-hot states (`+experiment=maxbias_dqn`: an MLP with 32 "
                    "hidden units, with and without replay; each setting is a stratum)",
            agents="Double DQN vs DQN",
            baseline=Arm("DQN", ("dqn",)), treatment=Arm("Double DQN", ("double_dqn",)), **common),
    ]


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m analysis.maxbias", description=__doc__.split("\n\n")[0])
    p.add_argument("paths", nargs="+", metavar="DIR", help="run or sweep directories of env=maxbias runs")
    p.add_argument("--out", required=True, help="output path without extension")
    p.add_argument("--episodes", type=int, default=300, help="episodes per seed to use (default: 300, the book's)")
    p.add_argument("--optimal", type=float, default=0.05,
                   help="the best left-probability under epsilon-greedy: epsilon / 2 (default 0.05)")
    args = p.parse_args(argv)
    df = load_returns(args.paths)
    df = df[df["env"].astype(str).str.startswith("rlzoo/MaxBias")]
    matrices = left_matrix(df, args.episodes)
    if not matrices:
        raise SystemExit("no env=maxbias runs with enough training episodes found")
    labels = sorted(matrices, key=lambda l: (list(NAMES).index(l) if l in NAMES else len(NAMES), l))
    matrices = {l: matrices[l] for l in labels}
    curve, table = left_curve(matrices), window_table(matrices)
    over = overestimation_table(df[df["label"].isin(labels)], args.episodes)
    if len(over):
        table = table.merge(over, on="label", how="left")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    curve.to_csv(out.with_name(out.name + "_curve.csv"), index=False)
    table.to_csv(out.with_suffix(".csv"), index=False)
    text = markdown(table, args.optimal)
    out.with_suffix(".md").write_text(text)
    plot(curve, args.optimal, out, labels)
    print(text, end="")


if __name__ == "__main__":
    main()
