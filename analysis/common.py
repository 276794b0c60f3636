"""Shared pieces of the command-line scripts: warnings, aligned curves, figure output."""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from analysis.load import RunWarning
from analysis.stats import bin_curves, interpolate_curves

CURVE_KEYS = ("env", "label", "unit")


def setup_warnings() -> None:
    """Print skipped/trimmed runs as one ``warning:`` line each on stderr."""
    def show(message, category, filename, lineno, file=None, line=None):
        print(f"warning: {message}", file=file or sys.stderr)
    warnings.showwarning = show
    warnings.simplefilter("always", RunWarning)


def add_common_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("paths", nargs="+", metavar="DIR",
                   help="run directories, sweep directories (searched recursively) or glob patterns")
    p.add_argument("--label-keys", nargs="*", default=None, metavar="KEY",
                   help="overrides that make up the label after the agent name (default: the overrides whose "
                        "values differ between loaded runs of the same agent; give none for the agent name alone)")
    p.add_argument("--labels", nargs="*", default=None, metavar="LABEL",
                   help="keep only these labels (default: all), in this order")
    p.add_argument("--envs", nargs="*", default=None, metavar="ENV", help="keep only these environments (e.g. CartPole-v1)")


def select(df: pd.DataFrame, labels: Sequence[str] | None, envs: Sequence[str] | None) -> pd.DataFrame:
    if labels:
        unknown = sorted(set(labels) - set(df["label"]))
        if unknown:
            warnings.warn(f"labels not found: {unknown}; available: {sorted(df['label'].unique())}", RunWarning)
        df = df[df["label"].isin(labels)]
    if envs:
        df = df[df["env"].isin(envs)]
    return df


def label_order(df: pd.DataFrame, labels: Sequence[str] | None = None) -> list[str]:
    present = list(dict.fromkeys(df["label"]))
    return [l for l in labels if l in present] if labels else sorted(present)


def aligned_curves(df: pd.DataFrame, phase: str, align: str = "auto", points: int = 50, smooth: int | None = None,
                   y: str = "return") -> pd.DataFrame:
    """One value per (env, label, unit, step) for ``phase``, aligned across units.

    - ``interp``: each unit's curve is linearly interpolated onto a common grid (per environment),
      inside its own step range only. For evaluation rows the grid is the set of evaluation steps
      when there are at most 200 of them (then runs that share their evaluation steps are not
      changed at all), else ``points`` evenly spaced steps.
    - ``bin``: steps are cut into ``points`` equal-width bins from 0 to the environment's last step;
      the values of a unit inside a bin are averaged and plotted at the bin's right edge.
    - ``auto``: ``interp`` for evaluation, ``bin`` for training episodes (which end at different
      steps for every seed).

    ``smooth`` (training rows): a trailing rolling mean over this many episodes, per unit, before
    alignment (default 1 for ``bin``, 10 for ``interp``).
    """
    d = df[df["phase"] == phase] if "phase" in df else df
    d = d.dropna(subset=[y])
    if align == "auto":
        align = "interp" if phase == "eval" else "bin"
    if phase == "train":
        k = smooth if smooth is not None else (10 if align == "interp" else 1)
        if k > 1:
            d = d.sort_values(["unit", "step"]).copy()
            d[y] = d.groupby("unit")[y].transform(lambda s: s.rolling(k, min_periods=1).mean())
    parts = []
    for env, g in d.groupby("env"):
        if align == "interp":
            steps = np.unique(g["step"])
            grid = steps if (phase == "eval" and len(steps) <= 200) else np.linspace(steps[0], steps[-1], points)
            parts.append(interpolate_curves(g, grid, y=y, by=CURVE_KEYS))
        elif align == "bin":
            parts.append(bin_curves(g, points, y=y, by=CURVE_KEYS, max_step=float(g["step"].max())))
        else:
            raise ValueError(f"align must be auto, bin or interp, not {align!r}")
    if not parts:
        return pd.DataFrame(columns=[*CURVE_KEYS, "step", y])
    return pd.concat(parts, ignore_index=True)


def save_figure(fig, out: str | Path, formats: Sequence[str] = ("png", "pdf"), dpi: int = 150) -> list[Path]:
    """Write ``fig`` as ``<out>.<fmt>`` for every format; returns the paths."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    paths = []
    for fmt in formats:
        path = out.with_name(out.name + "." + fmt)
        fig.savefig(path, dpi=dpi, bbox_inches="tight")
        paths.append(path)
    return paths
