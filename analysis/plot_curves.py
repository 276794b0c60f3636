"""Learning curves: environment steps vs episode return, one line per algorithm (label) with a 95%
bootstrap confidence band over seeds, one panel per environment.

Example::

    python -m analysis.plot_curves results/sweeps/2026-11-24_15-29-42      # -> <sweep>/analysis/curves.png, .pdf

Each algorithm keeps its colour in every figure (:func:`analysis.common.palette`); the legend sits
outside the axes.
"""

from __future__ import annotations

import argparse
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import seaborn as sns  # noqa: E402

from analysis.common import (POSITIVE_INT, Parser, add_common_args, aligned_curves, announce, bounded,  # noqa: E402
                             label_order, palette, save_figure, select, setup_warnings)
from analysis.load import load_returns, output_base  # noqa: E402


def plot_curves(df, phases=("eval",), align="auto", points=50, smooth=None, labels=None, ci=95, n_boot=1000,
                title=None, colours: dict[str, str] | None = None):
    """A seaborn FacetGrid: rows = phases, columns = environments. Returns (grid, aligned data).

    ``colours``: ``{label: colour}`` (default: :func:`analysis.common.palette` of the labels shown)."""
    import pandas as pd
    parts = []
    for phase in phases:
        c = aligned_curves(df, phase, align, points, smooth)
        if c.empty:
            print(f"warning: no {phase} rows to plot", file=sys.stderr)
        parts.append(c.assign(phase=phase))
    data = pd.concat(parts, ignore_index=True)
    if data.empty:
        if phases == ("eval",) and len(df) and (df["phase"] == "train").any():
            raise SystemExit("python -m analysis.plot_curves: error: these runs have no evaluations (eval_every=0?); "
                             "plot their training episodes with --phase train")
        raise SystemExit("python -m analysis.plot_curves: error: nothing to plot (no runs, or no rows of the chosen phase)")
    order = label_order(data, labels)
    colours = {lab: (colours or {}).get(lab) or c for lab, c in palette(order).items()}
    # name each line with its number of seeds before plotting, so that the legend is laid out for it
    seeds = data.groupby("label")["unit"].nunique()
    named = {lab: f"{lab} (n={seeds[lab]})" for lab in order if lab in seeds}
    data = data.assign(label=data["label"].map(named).fillna(data["label"]))
    colours = {named.get(lab, lab): c for lab, c in colours.items()}
    order = [named.get(lab, lab) for lab in order]
    envs = sorted(data["env"].unique())
    g = sns.relplot(data=data, kind="line", x="step", y="return", hue="label", hue_order=order, palette=colours,
                    col="env", col_order=envs, row="phase" if len(phases) > 1 else None,
                    errorbar=("ci", ci), n_boot=n_boot, seed=0, estimator="mean",
                    facet_kws=dict(sharex=False, sharey=False), height=3.2, aspect=1.3)
    g.set_axis_labels("environment steps", "return")
    g.set_titles(row_template="{row_name}", col_template="{col_name}")
    if g.legend is not None:
        g.legend.set_title(f"mean, {ci}% CI over seeds")  # FacetGrid puts it outside the panels, to their right
    if title:
        g.figure.suptitle(title, y=1.03)
    return g, data


def main(argv=None) -> int:
    p = Parser(
        prog="python -m analysis.plot_curves", description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        epilog="Alignment: 'interp' interpolates each seed's curve linearly onto a common step grid (no "
               "extrapolation); 'bin' averages each seed's episodes in equal-width step bins; 'auto' uses "
               "interp for eval (logged at fixed steps) and bin for train (episodes end at different steps).")
    add_common_args(p)
    p.add_argument("--phase", choices=["eval", "train", "both"], default="eval", help="which returns to plot")
    p.add_argument("--align", choices=["auto", "bin", "interp"], default="auto", help="how curves are aligned")
    p.add_argument("--points", type=POSITIVE_INT, default=50, help="number of bins / grid points per environment")
    p.add_argument("--smooth", type=POSITIVE_INT, default=None,
                   help="train only: rolling mean over this many episodes per seed before aligning "
                        "(default: 1 with bin, 10 with interp)")
    p.add_argument("--ci", type=bounded(float, 0, 100, True, True), default=95,
                   help="confidence level of the band (bootstrap over seeds)")
    p.add_argument("--n-boot", type=POSITIVE_INT, default=1000, help="bootstrap resamples for the band")
    p.add_argument("--title", default=None)
    p.add_argument("--out", default=None,
                   help="output path without extension (default: analysis/curves in the runs' common directory)")
    p.add_argument("--formats", nargs="+", default=["png", "pdf"], help="figure formats")
    args = p.parse_args(argv)
    setup_warnings()
    df = select(load_returns(args.paths, args.label_keys), args.labels, args.envs)
    phases = ("train", "eval") if args.phase == "both" else (args.phase,)
    g, _ = plot_curves(df, phases, args.align, args.points, args.smooth, args.labels, args.ci, args.n_boot, args.title)
    out = args.out or output_base(sorted(df["run_dir"].unique())) / "curves"
    announce(save_figure(g.figure, out, args.formats))
    plt.close(g.figure)
    return 0


if __name__ == "__main__":
    sys.exit(main())
