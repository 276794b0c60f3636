"""Find run directories and load their CSVs into tidy DataFrames.

A run directory holds ``returns.csv`` and/or ``metrics.csv`` and usually ``.hydra/`` (config.yaml,
overrides.yaml). Inputs may be run directories, sweep directories (searched recursively) or glob
patterns. Problems never raise: a missing, empty, headerless or unreadable CSV is reported with a
:class:`RunWarning` and skipped; a last line cut mid-row (a killed process) and rows that do not parse
are dropped with a warning.

Every loaded row gets these columns besides the CSV's own:

- ``run_dir``: the run directory (as given/found), ``unit``: ``run_dir#seed``, one independent
  learner (a seed of a population is a unit of its own);
- one column per command-line override in ``.hydra/overrides.yaml`` (``target_sync.every``,
  ``experiment``, ...), except keys that clash with CSV columns (``seed``, ``agent``, ``env``);
- ``label``: the agent name, followed by the overrides whose values differ between loaded runs of
  the same agent (e.g. ``dqn [buffer_size=64, target_sync.every=1]``) so ablations stay apart;
- ``finished``: whether the member reached ``total_steps`` (from ``metrics.csv`` and the config).
"""

from __future__ import annotations

import glob
import io
import warnings
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import pandas as pd
import yaml

RETURNS_COLUMNS = ("agent", "env", "seed", "phase", "step", "episode", "return", "length", "truncated",
                   "q_estimate", "mc_return", "time")
METRICS_COLUMNS = ("agent", "env", "seed", "step", "updates", "loss", "q_mean", "grad_norm", "epsilon",
                   "sps", "time")
RUN_FILES = ("returns.csv", "metrics.csv")

# Overrides that do not change what is learned: never part of a label.
NON_LABEL_KEYS = {"seed", "n_seeds", "total_steps", "progress", "device", "eval_every", "eval_episodes",
                  "log_every", "torch_threads", "threads", "processes", "learner_workers", "cpu_numpy", "fast_path", "checkpoint_every",
                  "resume", "nan_check", "agent", "env", "log_q_estimates"}


class RunWarning(UserWarning):
    """A run directory or file that was skipped or trimmed."""


def _warn(msg: str) -> None:
    warnings.warn(msg, RunWarning, stacklevel=3)


def find_run_dirs(paths: Iterable[str | Path]) -> list[Path]:
    """Run directories under ``paths`` (directories, sweep directories or glob patterns), sorted, unique.

    A directory is a run directory when it contains ``returns.csv`` or ``metrics.csv``; otherwise it is
    searched recursively. A path that matches nothing is reported with a warning.
    """
    found: list[Path] = []
    for p in paths:
        p = str(p)
        matches = sorted(glob.glob(p)) if glob.has_magic(p) else ([p] if Path(p).exists() else [])
        if not matches:
            _warn(f"{p}: no such file or directory (skipped)")
            continue
        n_before = len(found)
        for m in matches:
            m = Path(m)
            if m.is_file() and m.name in RUN_FILES:
                m = m.parent
            if not m.is_dir():
                continue
            if any((m / f).exists() for f in RUN_FILES):
                found.append(m)
            else:
                found.extend(sorted({f.parent for name in RUN_FILES for f in m.rglob(name)
                                     if ".hydra" not in f.parts}))
        if len(found) == n_before:
            _warn(f"{p}: no returns.csv or metrics.csv found (skipped)")
    unique = list(dict.fromkeys(found))
    return unique


def read_csv_safe(path: Path, columns: Sequence[str], numeric: Sequence[str],
                  required: Sequence[str] = ("step",)) -> pd.DataFrame | None:
    """Read one rlzoo CSV, tolerating a killed writer. Returns None (with a warning) when unusable."""
    path = Path(path)
    if not path.exists():
        _warn(f"{path}: missing (run skipped)")
        return None
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as e:
        _warn(f"{path}: unreadable ({e}) (run skipped)")
        return None
    if not text.strip():
        _warn(f"{path}: empty (run skipped)")
        return None
    if not text.endswith("\n"):  # the writer flushes whole rows: a missing newline is a row cut mid-write
        cut = text.rfind("\n")
        text = text[:cut + 1] if cut >= 0 else ""
        _warn(f"{path}: last line cut mid-row (dropped)")
    header = text.split("\n", 1)[0].strip().split(",")
    missing = [c for c in columns if c in required or c in ("agent", "env", "seed")]
    missing = [c for c in missing if c not in header]
    if missing:
        _warn(f"{path}: header lacks {missing} (run skipped)")
        return None
    try:
        df = pd.read_csv(io.StringIO(text), on_bad_lines="skip", dtype=str, keep_default_na=False)
    except Exception as e:  # noqa: BLE001 -- any parse failure is a broken run, not a crash
        _warn(f"{path}: unparseable ({type(e).__name__}: {e}) (run skipped)")
        return None
    if df.empty:
        _warn(f"{path}: no rows (run skipped)")
        return None
    n = len(df)
    for c in numeric:
        if c in df:
            df[c] = pd.to_numeric(df[c].replace("", np.nan), errors="coerce")
    df["seed"] = pd.to_numeric(df["seed"], errors="coerce")
    bad = df[list(required) + ["seed"]].isna().any(axis=1) | (df["agent"] == "") | (df["env"] == "")
    if bad.any():
        df = df[~bad]
        _warn(f"{path}: {int(bad.sum())} of {n} rows malformed (dropped)")
    if df.empty:
        return None
    df["seed"] = df["seed"].astype(int)
    return df.reset_index(drop=True)


def read_overrides(run_dir: Path) -> dict[str, str]:
    """Command-line overrides of a run as ``{key: value}`` (``+experiment=x`` -> ``experiment: x``)."""
    f = Path(run_dir) / ".hydra" / "overrides.yaml"
    if not f.exists():
        return {}
    try:
        items = yaml.safe_load(f.read_text()) or []
    except Exception as e:  # noqa: BLE001
        _warn(f"{f}: unreadable ({e}); overrides ignored")
        return {}
    out = {}
    for item in items:
        key, sep, value = str(item).partition("=")
        if sep and not key.startswith("hydra"):
            out[key.lstrip("+~")] = value
    return out


def read_config(run_dir: Path) -> dict:
    """The composed config of a run (``.hydra/config.yaml``), or ``{}``."""
    f = Path(run_dir) / ".hydra" / "config.yaml"
    if not f.exists():
        return {}
    try:
        return yaml.safe_load(f.read_text()) or {}
    except Exception as e:  # noqa: BLE001
        _warn(f"{f}: unreadable ({e}); config ignored")
        return {}


def _finished(metrics: pd.DataFrame | None, total_steps) -> dict[int, bool]:
    """Per seed: did the member log its last metrics row (written at ``total_steps``)?"""
    if metrics is None or total_steps is None:
        return {}
    last = metrics.groupby("seed")["step"].max()
    return {int(s): bool(v >= total_steps) for s, v in last.items()}


def add_labels(df: pd.DataFrame, override_keys: Sequence[str], label_keys: Sequence[str] | None = None) -> pd.DataFrame:
    """Add a ``label`` column: agent plus the overrides that tell runs of the same agent apart.

    ``label_keys=None`` picks, per agent, the override keys (outside :data:`NON_LABEL_KEYS`) whose value
    differs between the loaded runs; an explicit list uses exactly those keys.
    """
    if df.empty:
        df["label"] = pd.Series(dtype=str)
        return df
    runs = df.drop_duplicates("run_dir")
    keys_by_agent: dict[str, list[str]] = {}
    for agent, group in runs.groupby("agent"):
        if label_keys is not None:
            keys_by_agent[agent] = [k for k in label_keys if k in df]
            continue
        keys = []
        for k in override_keys:
            if k in NON_LABEL_KEYS or k not in group:
                continue
            if group[k].fillna("<default>").nunique() > 1:
                keys.append(k)
        keys_by_agent[agent] = keys

    def label(row) -> str:
        keys = keys_by_agent.get(row["agent"], [])
        parts = [f"{k}={row[k]}" for k in keys if isinstance(row.get(k), str) and row[k] != ""]
        return f"{row['agent']} [{', '.join(parts)}]" if parts else row["agent"]

    run_labels = runs.set_index("run_dir").apply(label, axis=1)
    df["label"] = df["run_dir"].map(run_labels)
    return df


def _load(paths, kind: str, label_keys: Sequence[str] | None = None) -> pd.DataFrame:
    columns, fname = (RETURNS_COLUMNS, "returns.csv") if kind == "returns" else (METRICS_COLUMNS, "metrics.csv")
    numeric = [c for c in columns if c not in ("agent", "env", "phase", "seed")]
    required = ("step", "return") if kind == "returns" else ("step",)
    frames, override_keys = [], []
    for run_dir in find_run_dirs(paths):
        df = read_csv_safe(run_dir / fname, columns, numeric, required)
        if df is None:
            continue
        if kind == "returns" and "phase" in df:
            df = df[df["phase"].isin(["train", "eval"])]
        cfg = read_config(run_dir)
        metrics = df if kind == "metrics" else (
            read_csv_safe(run_dir / "metrics.csv", METRICS_COLUMNS, ["step"]) if (run_dir / "metrics.csv").exists()
            else None)
        fin = _finished(metrics, cfg.get("total_steps"))
        df["finished"] = df["seed"].map(fin).fillna(True).astype(bool) if fin else True
        if fin and not all(fin.values()):
            last = metrics.groupby("seed")["step"].max()
            _warn(f"{run_dir}: unfinished (last step {int(last.min())} of {cfg.get('total_steps')}); "
                  "kept for curves, left out of summaries unless asked")
        df["run_dir"] = str(run_dir)
        df["unit"] = df["run_dir"] + "#" + df["seed"].astype(str)
        for k, v in read_overrides(run_dir).items():
            if k in df.columns:
                continue
            df[k] = v
            if k not in override_keys:
                override_keys.append(k)
        frames.append(df)
    if not frames:
        _warn("no usable runs found")
        return pd.DataFrame(columns=[*columns, "finished", "run_dir", "unit", "label"])
    out = pd.concat(frames, ignore_index=True)
    return add_labels(out, override_keys, label_keys)


def load_returns(paths: Iterable[str | Path], label_keys: Sequence[str] | None = None) -> pd.DataFrame:
    """All ``returns.csv`` rows of the runs under ``paths`` as one tidy DataFrame (see module doc)."""
    return _load(paths, "returns", label_keys)


def load_metrics(paths: Iterable[str | Path], label_keys: Sequence[str] | None = None) -> pd.DataFrame:
    """All ``metrics.csv`` rows of the runs under ``paths`` as one tidy DataFrame."""
    return _load(paths, "metrics", label_keys)
