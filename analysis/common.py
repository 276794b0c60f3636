"""Shared pieces of the command-line scripts: argument parsing (one-line errors, range-checked
options), warnings, default output paths next to the runs, the fixed colour of each algorithm,
aligned curves, figure output."""

from __future__ import annotations

import argparse
import sys
import warnings
import zlib
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from analysis.load import RunWarning, find_run_dirs, output_base
from analysis.stats import bin_curves, interpolate_curves

CURVE_KEYS = ("env", "label", "unit")


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line: ``<prog>: error: <message>`` and exit status 2."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}\n")


def bounded(kind, low=None, high=None, low_open=False, high_open=False):
    """An argparse type: ``kind`` (int or float) within ``[low, high]`` (ends open where asked)."""
    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {'an integer' if kind is int else 'a number'}, got {text!r}")
        if kind is float and not np.isfinite(value):
            raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
        bad_low = low is not None and (value <= low if low_open else value < low)
        bad_high = high is not None and (value >= high if high_open else value > high)
        if bad_low or bad_high:
            lo = "" if low is None else f"{'>' if low_open else '>='} {low:g}"
            hi = "" if high is None else f"{'<' if high_open else '<='} {high:g}"
            raise argparse.ArgumentTypeError(f"must be {' and '.join(x for x in (lo, hi) if x)}, got {text}")
        return value
    parse.__name__ = kind.__name__
    return parse


POSITIVE_INT = bounded(int, 1)


# --- colours: one per algorithm, the same in every figure ------------------------------------------------------

# The base algorithms keep these colours (matplotlib's tab10) in every figure; any other label (an ablation,
# a variant) gets one of EXTRA_COLOURS chosen by a hash of its text (CRC-32), so it too is the same in every
# figure and every session. Two labels of one figure that hash to the same colour: the later one (in sorted
# order) takes the next free colour, which keeps figures readable at the cost of stability for that pair.
BASE_COLOURS = {"dqn": "#1f77b4", "double_dqn": "#ff7f0e", "dueling_dqn": "#2ca02c", "dueling_double_dqn": "#d62728",
                "qtable": "#9467bd", "double_qtable": "#8c564b"}
EXTRA_COLOURS = ("#e377c2", "#7f7f7f", "#bcbd22", "#17becf", "#aec7e8", "#ffbb78", "#98df8a", "#ff9896",
                 "#c5b0d5", "#c49c94", "#f7b6d2", "#dbdb8d", "#9edae5", "#393b79", "#637939", "#8c6d31",
                 "#843c39", "#7b4173", "#3182bd", "#e6550d")


def colour_of(label: str) -> str:
    """The colour of ``label`` (an algorithm) in every figure."""
    if label in BASE_COLOURS:
        return BASE_COLOURS[label]
    return EXTRA_COLOURS[zlib.crc32(label.encode()) % len(EXTRA_COLOURS)]


def palette(labels: Sequence[str]) -> dict[str, str]:
    """``{label: colour}`` for the labels of one figure (see :func:`colour_of`; collisions resolved)."""
    out: dict[str, str] = {}
    used = set()
    for label in sorted(labels, key=lambda l: (l not in BASE_COLOURS, l)):
        colour = colour_of(label)
        if colour in used and label not in BASE_COLOURS:
            free = [c for c in EXTRA_COLOURS if c not in used]
            colour = free[0] if free else colour
        out[label] = colour
        used.add(colour)
    return out


# --- outputs --------------------------------------------------------------------------------------------------

def default_out(paths: Sequence[str], name: str) -> Path:
    """``<common directory of the runs>/analysis/<name>``: an analysis goes next to the runs it analyses."""
    dirs = find_run_dirs(paths)
    if not dirs:
        raise SystemExit(f"error: no run directories under {' '.join(map(str, paths))}")
    return output_base(dirs) / name


def announce(paths: Sequence[Path | str]) -> None:
    """Print every written path, one per line."""
    for path in paths:
        print(f"wrote {path}")


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
    d = d[np.isfinite(d[y].to_numpy(dtype=float))]  # missing and non-finite values: reported per unit on loading
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
