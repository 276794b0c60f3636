"""Statistics over seeds, following rliable (Agarwal et al. 2021, "Deep RL at the edge of the
statistical precipice"), plus the alignment of learning curves logged at different steps.

Scores are arrays of shape ``[runs, tasks]`` (one column per environment; a single environment is
one column). Confidence intervals are percentile intervals of a *stratified* bootstrap: each
resample draws, within every task independently, as many runs with replacement as that task has
(rliable's ``StratifiedBootstrap``). Tasks may have different numbers of runs (pass a list of 1-D
arrays).
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import pandas as pd

Scores = np.ndarray | Sequence[np.ndarray]


def _columns(scores: Scores) -> list[np.ndarray]:
    """Normalise ``[runs, tasks]`` arrays or a list of per-task 1-D arrays to a list of 1-D arrays."""
    if isinstance(scores, np.ndarray) or np.isscalar(scores[0]):
        a = np.asarray(scores, dtype=float)
        a = a[:, None] if a.ndim == 1 else a
        cols = [a[:, j] for j in range(a.shape[1])]
    else:
        cols = [np.asarray(c, dtype=float).ravel() for c in scores]
    cols = [c[np.isfinite(c)] for c in cols]
    if any(len(c) == 0 for c in cols):
        raise ValueError("every task needs at least one finite score")
    return cols


def iqm(x: np.ndarray, axis=None) -> float | np.ndarray:
    """Interquartile mean: the mean of the middle 50% of the scores (25% trimmed on each side).

    Matches ``scipy.stats.trim_mean(x, 0.25)`` (and rliable's IQM): ``floor(0.25 n)`` values are cut
    from each end.
    """
    from scipy.stats import trim_mean
    return trim_mean(np.asarray(x, dtype=float), 0.25, axis=axis)


def aggregate_mean(cols: list[np.ndarray]) -> float:
    """Mean over all runs of all tasks (tasks weighted by their number of runs)."""
    return float(np.mean(np.concatenate(cols)))


def aggregate_iqm(cols: list[np.ndarray]) -> float:
    """IQM over all runs of all tasks pooled together (rliable's aggregate IQM)."""
    return float(iqm(np.concatenate(cols)))


def stratified_bootstrap(scores: Scores, stat: Callable[[list[np.ndarray]], float], reps: int = 2000,
                         ci: float = 0.95, seed: int = 0) -> tuple[float, float, float]:
    """Point estimate and percentile ``ci`` interval of ``stat`` under the stratified bootstrap.

    ``stat`` receives a list of per-task 1-D arrays. Returns ``(estimate, low, high)``. With one run
    per task the interval collapses to the point estimate.
    """
    cols = _columns(scores)
    rng = np.random.default_rng(seed)
    point = stat(cols)
    idx = [rng.integers(0, len(c), size=(reps, len(c))) for c in cols]
    boot = np.array([stat([c[i[r]] for c, i in zip(cols, idx)]) for r in range(reps)])
    lo, hi = np.percentile(boot, [50 * (1 - ci), 100 - 50 * (1 - ci)])
    return point, float(lo), float(hi)


def mean_ci(scores: Scores, **kw) -> tuple[float, float, float]:
    """Mean with a stratified-bootstrap confidence interval."""
    return stratified_bootstrap(scores, aggregate_mean, **kw)


def iqm_ci(scores: Scores, **kw) -> tuple[float, float, float]:
    """Interquartile mean with a stratified-bootstrap confidence interval."""
    return stratified_bootstrap(scores, aggregate_iqm, **kw)


def _prob_greater(x: np.ndarray, y: np.ndarray) -> float:
    """P(X > Y) + 0.5 P(X = Y) for one draw from each sample (the Mann-Whitney U statistic / (n m))."""
    d = x[:, None] - y[None, :]
    return float(np.mean((d > 0) + 0.5 * (d == 0)))


def probability_of_improvement(x: Scores, y: Scores, reps: int = 2000, ci: float = 0.95,
                               seed: int = 0) -> tuple[float, float, float]:
    """Probability that algorithm X beats algorithm Y on a run drawn at random, averaged over tasks
    (rliable's ``probability_of_improvement``), with a stratified-bootstrap percentile interval.

    ``x`` and ``y`` hold the scores of the same tasks (columns) in the same order; runs are
    resampled within each task and each algorithm independently.
    """
    xc, yc = _columns(x), _columns(y)
    if len(xc) != len(yc):
        raise ValueError("x and y must cover the same tasks")
    point = float(np.mean([_prob_greater(a, b) for a, b in zip(xc, yc)]))
    rng = np.random.default_rng(seed)
    boot = np.empty(reps)
    for r in range(reps):
        boot[r] = np.mean([_prob_greater(a[rng.integers(0, len(a), len(a))], b[rng.integers(0, len(b), len(b))])
                           for a, b in zip(xc, yc)])
    lo, hi = np.percentile(boot, [50 * (1 - ci), 100 - 50 * (1 - ci)])
    return point, float(lo), float(hi)


# --- curve alignment -------------------------------------------------------------------------------

def bin_curves(df: pd.DataFrame, bins: int | Sequence[float] = 50, x: str = "step", y: str = "return",
               by: Sequence[str] = ("unit",), max_step: float | None = None) -> pd.DataFrame:
    """Align curves by binning: the x axis is cut into equal-width bins over ``[0, max_step]`` and
    each curve (one group of ``by``, normally one seed of one run) is averaged inside each bin.

    The result has one row per curve and non-empty bin, with ``x`` set to the bin's right edge (the
    number of steps done by the end of the bin). Bins where a curve has no point are left out for
    that curve, never filled.
    """
    if max_step is None:
        max_step = float(df[x].max()) if len(df) else 1.0
    edges = np.linspace(0, max_step, bins + 1) if np.isscalar(bins) else np.asarray(bins, dtype=float)
    which = np.clip(np.searchsorted(edges, df[x].to_numpy(), side="left"), 1, len(edges) - 1)
    out = df.assign(_bin=which).groupby([*by, "_bin"], as_index=False, observed=True)[y].mean()
    out[x] = edges[out["_bin"].to_numpy()]
    return out.drop(columns="_bin")


def interpolate_curves(df: pd.DataFrame, grid: Sequence[float] | int = 50, x: str = "step", y: str = "return",
                       by: Sequence[str] = ("unit",)) -> pd.DataFrame:
    """Align curves by linear interpolation onto a common ``grid`` of x values.

    Points logged at the same x (several evaluation episodes) are averaged first. Each curve is
    interpolated only inside its own range ``[first x, last x]``: no extrapolation, grid points outside
    it are left out for that curve. ``grid`` may be an int (that many evenly spaced points from the
    smallest to the largest x in ``df``).
    """
    if np.isscalar(grid):
        grid = np.linspace(df[x].min(), df[x].max(), int(grid))
    grid = np.asarray(grid, dtype=float)
    rows = []
    for key, g in df.groupby(list(by), observed=True):
        pts = g.groupby(x)[y].mean()
        xs, ys = pts.index.to_numpy(dtype=float), pts.to_numpy(dtype=float)
        inside = grid[(grid >= xs[0]) & (grid <= xs[-1])]
        if len(inside) == 0:
            continue
        part = pd.DataFrame({x: inside, y: np.interp(inside, xs, ys)})
        for col, val in zip(by, key if isinstance(key, tuple) else (key,)):
            part[col] = val
        rows.append(part)
    if not rows:
        return pd.DataFrame(columns=[*by, x, y])
    return pd.concat(rows, ignore_index=True)[[*by, x, y]]


def steps_to_threshold(curve: pd.DataFrame, threshold: float, x: str = "step", y: str = "return",
                       sustain: int = 1) -> float:
    """First x from which the curve (already one value per x) stays at or above ``threshold``: the first
    point such that it and the next ``sustain - 1`` points (or all the points left, near the end) reach
    the threshold. ``sustain=1``: the first point that reaches it. NaN if never.

    A missing or non-finite value does not reach the threshold.
    """
    if sustain < 1:
        raise ValueError(f"sustain must be >= 1, got {sustain}")
    c = curve.sort_values(x)
    ok = np.nan_to_num(c[y].to_numpy(dtype=float), nan=-np.inf) >= threshold
    xs = c[x].to_numpy()
    for i in range(len(ok)):
        if ok[i:i + sustain].all():
            return float(xs[i])
    return float("nan")


def difference_ci(x: Scores, y: Scores, stat: Callable[[np.ndarray], float] = np.mean, reps: int = 2000,
                  ci: float = 0.95, seed: int = 0) -> tuple[float, float, float]:
    """``stat(x) - stat(y)`` averaged over tasks, with a percentile bootstrap interval that resamples the
    runs of each algorithm within each task independently. ``x`` and ``y`` cover the same tasks (columns)."""
    xc, yc = _columns(x), _columns(y)
    if len(xc) != len(yc):
        raise ValueError("x and y must cover the same tasks")
    point = float(np.mean([stat(a) - stat(b) for a, b in zip(xc, yc)]))
    rng = np.random.default_rng(seed)
    boot = np.empty(reps)
    for r in range(reps):
        boot[r] = np.mean([stat(a[rng.integers(0, len(a), len(a))]) - stat(b[rng.integers(0, len(b), len(b))])
                           for a, b in zip(xc, yc)])
    lo, hi = np.percentile(boot, [50 * (1 - ci), 100 - 50 * (1 - ci)])
    return point, float(lo), float(hi)
