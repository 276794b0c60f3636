"""Find run directories and load their CSVs into tidy DataFrames.

A run directory holds ``returns.csv`` and/or ``metrics.csv`` and usually ``.hydra/`` (config.yaml,
overrides.yaml). Inputs may be run directories, sweep directories (searched recursively) or glob
patterns. Problems never raise, and nothing is dropped without a ``RunWarning`` that names it: a
missing, empty, headerless or unreadable CSV is skipped; a last line cut mid-row (a killed process)
and rows that cannot be attributed to a seed and step are dropped; rows that repeat the (seed, phase,
step, episode) of an earlier row are dropped (the first is kept); missing or non-finite returns are
kept as NaN/inf and reported per unit; a seed found in two run directories with the same
configuration is counted once.

Every loaded row gets these columns besides the CSV's own:

- ``run_dir``: the run directory (as given/found), ``unit``: ``run_dir#seed``, one independent
  learner (a seed of a population is a unit of its own);
- one column per command-line override in ``.hydra/overrides.yaml`` (``target_sync.every``,
  ``experiment``, ...), except keys that clash with CSV columns (``seed``, ``agent``, ``env``);
- ``label``: the agent name, followed by the configuration keys that tell runs of the same agent
  apart (see :func:`add_labels`), e.g. ``dqn [buffer_size=64, target_sync.every=1]``;
- ``finished``: whether the member reached ``total_steps`` (from ``metrics.csv`` and the config).
"""

from __future__ import annotations

import functools
import glob
import io
import os
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

# Keys that say how a run was executed or logged, not what was learned: never part of a run's identity.
# device, threads and fast_path are not among them: they change a run's numbers (in the last digits), so a
# resumed run may not change them (rlzoo.io.checkpoint.RESUME_MAY_CHANGE) and they enter labels.
EXECUTION_KEYS = {"seed", "n_seeds", "progress", "torch_threads", "processes",
                  "learner_workers", "cpu_numpy", "optimizer.fused", "checkpoint_every", "resume",
                  "nan_check", "log_every", "log_q_estimates", "tensorboard", "logger"}
# Keys of the experiment's protocol: part of a run's identity (two runs that differ in them are not
# repeats of each other) but not of an algorithm's label (seeds trained for different budgets or
# evaluated at other intervals still pool as one algorithm). eval_epsilon is *not* here: a run evaluated
# with exploration measures something else, so it gets a label of its own.
PROTOCOL_KEYS = {"total_steps", "eval_every", "eval_episodes"}
# Keys that never enter a label: execution, protocol, the group choices themselves and the environment
# (``env`` and every ``env.*`` key: so the same algorithm on several environments forms one aggregate).
NON_LABEL_KEYS = EXECUTION_KEYS | PROTOCOL_KEYS | {"agent", "env"}
ENV_PREFIX = "env."


class RunWarning(UserWarning):
    """A run directory, file, row or unit that was skipped, trimmed or is reported as suspect."""


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
                  required: Sequence[str] = ("step",), key: Sequence[str] | None = None) -> pd.DataFrame | None:
    """Read one rlzoo CSV, tolerating a killed writer. Returns None (with a warning) when unusable.

    ``required`` columns must parse on every row (rows where they do not are dropped with a warning);
    other numeric columns become NaN where empty or unparseable. ``key``: columns that identify a row
    (e.g. seed, phase, step, episode); a row repeating the key of an earlier row is dropped with a warning
    (two writers in one directory, or a file appended twice).
    """
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
    if key:
        df = drop_repeated_rows(df, key, path)
    return df.reset_index(drop=True)


def drop_repeated_rows(df: pd.DataFrame, key: Sequence[str], path) -> pd.DataFrame:
    """Rows that repeat the ``key`` columns of an earlier row (two writers in one run directory, a file
    appended twice): reported with their count, the first of each kept."""
    key = [k for k in key if k in df]
    repeated = df.duplicated(subset=key, keep="first")
    if repeated.any():
        exact = df.duplicated(keep="first")
        units = sorted(df.loc[repeated, "seed"].unique().tolist())
        _warn(f"{path}: {int(repeated.sum())} rows repeat the ({', '.join(key)}) of an earlier row "
              f"({int((repeated & ~exact).sum())} of them with different values; seeds {units}): two writers "
              "in one run directory? Kept the first of each")
        df = df[~repeated]
    return df


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
        cfg = yaml.safe_load(f.read_text()) or {}
    except Exception as e:  # noqa: BLE001
        _warn(f"{f}: unreadable ({e}); config ignored")
        return {}
    return cfg if isinstance(cfg, dict) else {}


def canonical(value) -> str:
    """A configuration value as text that compares equal exactly when the values are equal
    (``1.0`` and ``1`` alike, lists without spaces, ``None`` as ``null``)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        text = repr(value)
        return text[:-2] if text.endswith(".0") else text
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(canonical(v) for v in value) + "]"
    return str(value)


def flatten_config(cfg: dict, prefix: str = "") -> dict[str, str]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": "1"}`` with canonical values.

    Left out: ``_partial_`` flags and values that only interpolate another key (``gamma: ${gamma}``: the
    key it refers to is compared itself). ``_target_`` values keep only the class or function name, so a
    module moved by a refactoring does not make a new algorithm.
    """
    out: dict[str, str] = {}
    for k, v in cfg.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten_config(v, key + "."))
        elif str(k) == "_partial_":
            continue
        elif isinstance(v, str) and v.startswith("${") and v.endswith("}") and v.count("${") == 1:
            continue
        elif str(k) == "_target_" and isinstance(v, str):
            out[key] = v.rsplit(".", 1)[-1]
        else:
            out[key] = canonical(v)
    return out


def run_identity(run_dir: Path) -> tuple[dict[str, str], bool]:
    """What was trained in a run: its resolved configuration, flattened, without :data:`EXECUTION_KEYS`.

    Returns ``(identity, from_config)``. Without ``.hydra/config.yaml`` the command-line overrides
    stand in for it (``from_config`` False): labels then follow the overrides as typed.
    """
    cfg = read_config(run_dir)
    if cfg:
        flat = flatten_config(cfg)
    else:
        flat = {k: canonical(_parse(v)) for k, v in read_overrides(run_dir).items()}
    return {k: v for k, v in flat.items() if k not in EXECUTION_KEYS}, bool(cfg)


def _parse(text: str):
    try:
        return yaml.safe_load(text)
    except Exception:  # noqa: BLE001
        return text


def _finished(metrics: pd.DataFrame | None, total_steps) -> dict[int, bool]:
    """Per seed: did the member log its last metrics row (written at ``total_steps``)?"""
    if metrics is None or total_steps is None:
        return {}
    last = metrics.groupby("seed")["step"].max()
    return {int(s): bool(v >= total_steps) for s, v in last.items()}


def _label_key(k: str) -> bool:
    return k not in NON_LABEL_KEYS and not k.startswith(ENV_PREFIX) and not k.startswith("hydra.")


def _touches(override: str, key: str) -> bool:
    return key == override or key.startswith(override + ".")


def _shown(key: str, value: str | None) -> str:
    if key.endswith("._target_"):
        return f"{key[:-len('._target_')]}={value}"
    return f"{key}={value}"


# The config groups (directories of ``conf/``, e.g. ``ablation``, ``replay/sampler``): an override of one of these
# picks a config file; any other override sets a value (``progress=false`` is not a choice that names a variant).
CONF_DIR = Path(__file__).resolve().parents[1] / "conf"


@functools.lru_cache(maxsize=None)
def _is_group(key: str) -> bool:
    return key not in NON_LABEL_KEYS and (CONF_DIR / key).is_dir()


def _named_choices(dirs: list[str], keys: list[str], identities: dict[str, dict[str, str]],
                   overrides: dict[str, dict[str, str]]) -> dict[str, str]:
    """``{key: group}`` for the label keys that a config-group choice on the command line explains: a group
    override (``+ablation=no_noisy``, ``replay/sampler=uniform``: a directory of ``conf/`` whose keys are not in the
    resolved configuration under its own name) that every run of ``dirs`` sets, whose value determines the key's value across these runs, and the key set by
    no run's own override. Such a run is labelled by its choice (``ablation=no_noisy``) instead of every key the
    choice changed."""
    groups = {g for d in dirs for g in overrides[d]
              if _is_group(g) and g != "experiment" and not any(k == g or k.startswith(g + ".") for k in identities[d])}
    groups = sorted(g for g in groups if all(g in overrides[d] for d in dirs))
    named: dict[str, str] = {}
    for k in keys:
        if any(_touches(o, k) for d in dirs for o in overrides[d] if o not in ("agent", "env", "experiment")):
            continue
        for g in groups:
            seen: dict[str, str | None] = {}
            if all(seen.setdefault(overrides[d][g], identities[d].get(k)) == identities[d].get(k) for d in dirs):
                named[k] = g
                break
    return named


def add_labels(df: pd.DataFrame, identities: dict[str, dict[str, str]], overrides: dict[str, dict[str, str]],
               label_keys: Sequence[str] | None = None) -> pd.DataFrame:
    """Add a ``label`` column: the agent name plus the configuration that tells runs of one agent apart.

    ``identities``: per run directory its resolved configuration (:func:`run_identity`); ``overrides``:
    its command-line overrides. With ``label_keys=None``:

    - the *label keys* of an agent are the keys (outside :data:`NON_LABEL_KEYS`, ``env.*`` and ``hydra.*``)
      whose resolved values differ between its runs on the same environment (a key missing from a run's
      config counts as a value of its own). Settings that differ only between environments never split
      an algorithm, so the cross-environment aggregate forms; a default passed explicitly resolves to
      the same value and makes no new label;
    - a run's label lists a label key unless the run has the *reference* value: the value that the runs
      of this agent and environment that did not set the key on the command line agree on (a value set by
      an ``+experiment`` preset counts as not set). Where there is no such reference, every run lists the key.

    An explicit ``label_keys`` list names exactly the keys to show (their values in every run).
    """
    if df.empty:
        df["label"] = pd.Series(dtype=str)
        return df
    runs = df.drop_duplicates("run_dir")[["run_dir", "agent", "env"]]
    labels: dict[str, str] = {}
    for agent, group in runs.groupby("agent"):
        dirs_by_env = {env: list(g["run_dir"]) for env, g in group.groupby("env")}
        if label_keys is not None:
            for d in group["run_dir"]:
                parts = [_shown(k, identities[d][k]) for k in label_keys if k in identities[d]]
                labels[d] = f"{agent} [{', '.join(parts)}]" if parts else agent
            continue
        keys: set[str] = set()
        for dirs in dirs_by_env.values():
            all_keys = set().union(*(identities[d] for d in dirs))
            keys |= {k for k in all_keys if _label_key(k) and len({identities[d].get(k) for d in dirs}) > 1}
        keys_sorted = sorted(keys)
        for env, dirs in dirs_by_env.items():
            reference = {}
            for k in keys_sorted:
                untouched = {identities[d].get(k) for d in dirs if not any(_touches(o, k) for o in overrides[d]
                                                                           if o not in ("agent", "env"))}
                if len(untouched) == 1:
                    reference[k] = untouched.pop()
            named = _named_choices(dirs, keys_sorted, identities, overrides)
            for d in dirs:
                parts = [_shown(k, identities[d].get(k)) for k in keys_sorted
                         if (k not in reference or identities[d].get(k) != reference[k])
                         and identities[d].get(k) is not None and k not in named]
                parts = sorted({f"{g}={overrides[d][g]}" for g in named.values()}) + parts
                labels[d] = f"{agent} [{', '.join(parts)}]" if parts else agent
    df["label"] = df["run_dir"].map(labels)
    return df


def _drop_repeated_seeds(df: pd.DataFrame, identities: dict[str, dict[str, str]], from_config: dict[str, bool]):
    """A seed of one configuration found in several run directories (a run copied or made twice, e.g. an
    experiment that repeats another's settings) is one sample, not two: keep the first directory's rows."""
    seen: dict[tuple, str] = {}
    drop = []
    for (run_dir, agent, env, seed) in df[["run_dir", "agent", "env", "seed"]].drop_duplicates().itertuples(index=False):
        if not from_config.get(run_dir):
            continue
        key = (agent, env, int(seed), tuple(sorted(identities[run_dir].items())))
        if key in seen and seen[key] != run_dir:
            drop.append((run_dir, seed, seen[key]))
        else:
            seen.setdefault(key, run_dir)
    if not drop:
        return df
    by_dir: dict[tuple[str, str], list[int]] = {}
    for run_dir, seed, first in drop:
        by_dir.setdefault((run_dir, first), []).append(int(seed))
    mask = np.zeros(len(df), dtype=bool)
    for (run_dir, first), seeds in by_dir.items():
        _warn(f"{run_dir}: seeds {sorted(seeds)} repeat the configuration and seeds of {first} "
              "(the same experiment twice): counted once, from the first")
        mask |= ((df["run_dir"] == run_dir) & df["seed"].isin(seeds)).to_numpy()
    return df[~mask].reset_index(drop=True)


def _report_nonfinite(df: pd.DataFrame, run_dir: Path) -> None:
    """One warning per unit whose returns are missing or non-finite (they stay in the table as NaN/inf)."""
    bad = df[~np.isfinite(df["return"].to_numpy(dtype=float))]
    for seed, g in bad.groupby("seed"):
        where = ", ".join(f"{phase} at step {int(step)}: {value}" for phase, step, value in
                          g[["phase", "step", "return"]].head(3).itertuples(index=False, name=None))
        more = f" and {len(g) - 3} more" if len(g) > 3 else ""
        _warn(f"{run_dir}#{seed}: {len(g)} returns missing or non-finite ({where}{more}): kept as such; "
              "curves skip them and a final return over them is reported as non-finite")


def _load(paths, kind: str, label_keys: Sequence[str] | None = None) -> pd.DataFrame:
    columns, fname = (RETURNS_COLUMNS, "returns.csv") if kind == "returns" else (METRICS_COLUMNS, "metrics.csv")
    numeric = [c for c in columns if c not in ("agent", "env", "phase", "seed")]
    key = ("seed", "phase", "step", "episode") if kind == "returns" else ("seed", "step")
    frames, identities, overrides, from_config = [], {}, {}, {}
    for run_dir in find_run_dirs(paths):
        df = read_csv_safe(run_dir / fname, columns, numeric, ("step",))
        if df is None:
            continue
        if kind == "returns":
            if "phase" in df:  # rows appended by rlzoo.evaluate (phase "evaluate") follow their own protocol
                df = df[df["phase"].isin(["train", "eval"])]
            _report_nonfinite(df, run_dir)
        df = drop_repeated_rows(df, key, run_dir / fname).reset_index(drop=True)
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
        ov = read_overrides(run_dir)
        for k, v in ov.items():
            if k not in df.columns:
                df[k] = v
        identities[str(run_dir)], from_config[str(run_dir)] = run_identity(run_dir)
        overrides[str(run_dir)] = ov
        frames.append(df)
    if not frames:
        _warn("no usable runs found")
        return pd.DataFrame(columns=[*columns, "finished", "run_dir", "unit", "label"])
    out = pd.concat(frames, ignore_index=True)
    out = _drop_repeated_seeds(out, identities, from_config)
    return add_labels(out, identities, overrides, label_keys)


def load_returns(paths: Iterable[str | Path], label_keys: Sequence[str] | None = None) -> pd.DataFrame:
    """All ``returns.csv`` rows of the runs under ``paths`` as one tidy DataFrame (see module doc)."""
    return _load(paths, "returns", label_keys)


def load_metrics(paths: Iterable[str | Path], label_keys: Sequence[str] | None = None) -> pd.DataFrame:
    """All ``metrics.csv`` rows of the runs under ``paths`` as one tidy DataFrame."""
    return _load(paths, "metrics", label_keys)


def run_settings(run_dir: str | Path) -> dict:
    """The few settings the summaries need from a run's config: ``total_steps``, ``eval_every``,
    ``eval_episodes`` (None where the config does not say)."""
    cfg = read_config(Path(run_dir))
    return {k: cfg.get(k) for k in ("total_steps", "eval_every", "eval_episodes")}


def output_base(run_dirs: Sequence[str | Path]) -> Path:
    """Where an analysis of ``run_dirs`` writes by default: ``analysis/`` in their deepest common
    directory (a run's own directory, a sweep's directory, ...)."""
    dirs = [os.path.abspath(d) for d in run_dirs]
    if not dirs:
        raise ValueError("no run directories")
    common = Path(os.path.commonpath(dirs))
    try:
        common = common.relative_to(Path.cwd())
    except ValueError:
        pass
    return common / "analysis"
