"""Overestimation (van Hasselt et al. 2016, Figure 3 in spirit): the agent's value estimate vs the
true discounted return over training, per algorithm.

Top row: ``q_estimate`` (mean max_a Q(s, a) over the states of an episode, solid) and
``mc_return`` (the mean discounted return actually obtained from those states, dashed). Bottom row:
the gap ``q_estimate - mc_return`` (> 0: overestimation). Means over seeds with 95% bootstrap bands.
``--phase train`` (default): the training episodes, each seed's averaged in equal-width step bins (they
include exploration); ``--phase eval``: the greedy evaluation episodes (runs that log the estimate on them,
e.g. ``+experiment=overestimation_minatar``), each evaluation one point: the greedy policy's estimate
against its own return.

Example::

    python -m analysis.plot_overestimation results/sweeps/<time> --labels dqn double_dqn   # -> <sweep>/analysis/overestimation.png
    python -m analysis.plot_overestimation <minatar runs> --phase eval --out figures/overestimation_minatar
"""

from __future__ import annotations

import argparse
import sys
import warnings

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from analysis.common import (POSITIVE_INT, Parser, add_common_args, announce, bounded, label_order,  # noqa: E402
                             palette, save_figure, select, setup_warnings)
from analysis.load import load_returns, output_base  # noqa: E402
from analysis.stats import bin_curves, mean_ci  # noqa: E402
from analysis.summary import LAST_EVALS, fmt_ci, last_eval_gaps, overestimation_gaps  # noqa: E402

KEYS = ("env", "label", "unit")


def overestimation_data(df: pd.DataFrame, points: int = 40, exclude_length: int | None = None,
                        phase: str = "train") -> pd.DataFrame:
    """Per-seed curves of q_estimate, mc_return and gap (long format: column ``quantity``): the ``phase``
    episodes' values, binned into ``points`` step bins (train) or averaged per evaluation (eval)."""
    d = df[df["phase"] == phase].dropna(subset=["q_estimate", "mc_return"]).copy()
    if exclude_length:
        d = d[d["length"] < exclude_length]
    d["gap"] = d["q_estimate"] - d["mc_return"]
    parts = []
    for env, g in d.groupby("env"):
        for q in ("q_estimate", "mc_return", "gap"):
            if phase == "eval":
                b = g.groupby([*KEYS, "step"], as_index=False)[q].mean()
            else:
                b = bin_curves(g, points, y=q, by=KEYS, max_step=float(g["step"].max()))
            parts.append(b.rename(columns={q: "value"}).assign(quantity=q))
    if not parts:
        return pd.DataFrame(columns=[*KEYS, "step", "value", "quantity"])
    return pd.concat(parts, ignore_index=True)


def plot_overestimation(df: pd.DataFrame, points: int = 40, labels=None, ci: float = 95, n_boot: int = 1000,
                        exclude_length: int | None = None, colours: dict[str, str] | None = None,
                        phase: str = "train"):
    data = overestimation_data(df, points, exclude_length, phase)
    if data.empty:
        what = "training" if phase == "train" else "evaluation"
        raise SystemExit(f"plot_overestimation: error: no {what} rows with q_estimate and mc_return "
                         "(runs need log_q_estimates=true" + (")" if phase == "train" else
                                                              " and a version that logs them on evaluations)"))
    order = label_order(data, labels)
    colours = {lab: (colours or {}).get(lab) or c for lab, c in palette(order).items()}
    envs = sorted(data["env"].unique())
    fig, axes = plt.subplots(2, len(envs), figsize=(4.6 * len(envs), 6.4), squeeze=False, sharex="col")
    band = dict(errorbar=("ci", ci), n_boot=n_boot, seed=0)
    for j, env in enumerate(envs):
        e = data[data["env"] == env]
        top = e[e["quantity"] != "gap"].replace({"quantity": {"q_estimate": "estimate", "mc_return": "true return"}})
        sns.lineplot(data=top, x="step", y="value", hue="label", hue_order=order, palette=colours, style="quantity",
                     style_order=["estimate", "true return"], ax=axes[0, j], legend=j == len(envs) - 1, **band)
        sns.lineplot(data=e[e["quantity"] == "gap"], x="step", y="value", hue="label", hue_order=order, palette=colours,
                     ax=axes[1, j], legend=False, **band)
        axes[1, j].axhline(0.0, color="0.5", lw=0.8, ls=":")
        axes[0, j].set(title=env if phase == "train" else f"{env} (greedy evaluations)",
                       ylabel="value (discounted)" if j == 0 else "")
        axes[1, j].set(xlabel="environment steps", ylabel="estimate − true return" if j == 0 else "")
    if axes[0, -1].get_legend() is not None:
        sns.move_legend(axes[0, -1], "upper left", bbox_to_anchor=(1.02, 1.0), frameon=False)
    with warnings.catch_warnings():  # a long legend outside the axes: savefig's bbox_inches="tight" makes room
        warnings.simplefilter("ignore", UserWarning)
        fig.tight_layout()
    return fig, data


def main(argv=None) -> int:
    p = Parser(prog="python -m analysis.plot_overestimation", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_common_args(p)
    p.add_argument("--phase", choices=["train", "eval"], default="train",
                   help="train: training episodes (with exploration); eval: greedy evaluation episodes")
    p.add_argument("--points", type=POSITIVE_INT, default=40, help="step bins per environment (--phase train)")
    p.add_argument("--gap-from", type=bounded(float, 0.0, 1.0, high_open=True), default=0.5,
                   help="the printed mean gap covers training episodes after this fraction of each seed's run "
                        "(--phase train)")
    p.add_argument("--last-evals", type=POSITIVE_INT, default=LAST_EVALS, metavar="K",
                   help="the printed mean gap covers each seed's last K evaluations (--phase eval)")
    p.add_argument("--exclude-length", type=POSITIVE_INT, default=None, metavar="L",
                   help="leave out training episodes of length >= L: episodes cut by a time limit (500 on "
                        "CartPole), whose true return lacks the rewards after the cut")
    p.add_argument("--ci", type=bounded(float, 0, 100, True, True), default=95)
    p.add_argument("--n-boot", type=POSITIVE_INT, default=1000)
    p.add_argument("--out", default=None,
                   help="output path without extension (default: analysis/overestimation in the runs' common directory)")
    p.add_argument("--formats", nargs="+", default=["png", "pdf"])
    args = p.parse_args(argv)
    setup_warnings()
    df = select(load_returns(args.paths, args.label_keys), args.labels, args.envs)
    fig, _ = plot_overestimation(df, args.points, args.labels, args.ci, args.n_boot, args.exclude_length,
                                 phase=args.phase)
    out = args.out or output_base(sorted(df["run_dir"].unique())) / "overestimation"
    written = save_figure(fig, out, args.formats)
    plt.close(fig)
    if args.phase == "eval":
        gaps = last_eval_gaps(df[df["length"] < args.exclude_length] if args.exclude_length else df, args.last_evals)
        print(f"\nGreedy evaluations, each seed's last {args.last_evals}:")
    else:
        gaps = overestimation_gaps(df, args.gap_from, args.exclude_length)
    print(f"\n| env | algorithm | seeds | estimate | true return | gap [95% CI] |\n|---|---|---|---|---|---|")
    for (env, label), g in gaps.groupby(["env", "label"]):
        print(f"| {env} | {label} | {len(g)} | {g['q_estimate'].mean():.2f} | {g['mc_return'].mean():.2f} | "
              f"{fmt_ci(*mean_ci(g['gap'].to_numpy()), digits=2)} |")
    announce(written)
    return 0


if __name__ == "__main__":
    sys.exit(main())
