"""One report of the seed's claims: for each claim, what the seed says, its source paper, the testbed, a
figure, a table with confidence intervals and a verdict, from the runs found under the given directories.

Example::

    python -m analysis.report results/reference --out results/reference/report    # -> report.md + figures

**Verdict rule.** Each claim compares a *treatment* with a *baseline* (e.g. DQN with and without a target
network) on runs that agree on every other setting that matters (a *stratum*: one environment and one
configuration of the remaining keys; several strata are averaged). The effect is ``treatment - baseline``
of the claim's metric (the mean over seeds of each arm, averaged over strata) with a 95% percentile
bootstrap interval that resamples the seeds of each arm in each stratum independently. With the claimed
sign s (+1: the treatment should be higher, -1: lower):

- *reproduced*: the interval of ``s * effect`` lies above 0;
- *not reproduced*: it lies below 0 (a clear effect in the other direction);
- *inconclusive*: it contains 0, or an arm has fewer than 2 seeds in every stratum.

A claim whose runs are not among the given directories is listed as *no runs given*.

**Adding a claim.** A claim is any object with the attributes of :class:`Claim` and a method
``evaluate(runs, out_dir, colours) -> Evidence | None`` (None: no runs for it). :class:`Comparison` does
the common case (two arms chosen by agent name and a predicate on the resolved configuration, a per-seed
metric, a figure function); a module with its own metric or figure either builds a :class:`Comparison`
with its own ``metric`` and ``figure`` functions or writes its own ``evaluate``. Put it in
:data:`CLAIMS`, or define ``report_claims() -> list`` in one of :data:`PLUGINS` (e.g. ``analysis/maxbias.py``):
the report imports those modules when they exist.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import re
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from analysis.common import Parser, announce, palette, save_figure, setup_warnings  # noqa: E402
from analysis.load import (ENV_PREFIX, RunWarning, add_labels, find_run_dirs, load_returns, output_base,  # noqa: E402
                           read_overrides, run_identity)
from analysis.stats import difference_ci, mean_ci  # noqa: E402
from analysis.summary import LAST_EVALS, ROUGH_BELOW, final_scores, fmt_ci, overestimation_gaps  # noqa: E402

PLUGINS = ("analysis.maxbias", "analysis.corridor", "analysis.minatar", "analysis.rainbow")
VERDICTS = ("reproduced", "not reproduced", "inconclusive", "no runs given")


# --- the runs a report reads ------------------------------------------------------------------------------------

class Runs:
    """The runs under the report's directories: their directories, returns (loaded once, on first use) and
    each run's resolved configuration (:func:`analysis.load.run_identity`)."""

    def __init__(self, paths: Sequence[str | Path]):
        self.paths = [str(p) for p in paths]
        self.run_dirs = find_run_dirs(self.paths)
        self._returns: pd.DataFrame | None = None
        self._identity: dict[str, dict[str, str]] = {}

    @property
    def returns(self) -> pd.DataFrame:
        if self._returns is None:
            df = load_returns(self.run_dirs) if self.run_dirs else pd.DataFrame(columns=["run_dir", "label"])
            self._returns = df[df["finished"]] if "finished" in df and len(df) else df
        return self._returns

    def identity(self, run_dir: str) -> dict[str, str]:
        if run_dir not in self._identity:
            self._identity[run_dir] = run_identity(Path(run_dir))[0]
        return self._identity[run_dir]

    def on(self, envs: Callable[[str], bool]):
        """``(run_dir, agent, env, identity)`` for each run whose environment satisfies ``envs``."""
        df = self.returns
        if df.empty:
            return
        for run_dir, agent, env in df[["run_dir", "agent", "env"]].drop_duplicates().itertuples(index=False):
            if envs(env):
                yield run_dir, agent, env, self.identity(run_dir)


def relabel(df: pd.DataFrame, runs: Runs) -> pd.DataFrame:
    """Labels relative to these rows' runs only (what tells *them* apart), so a claim's figure stays legible
    whatever else the report read; the colours follow the labels (:func:`analysis.common.palette`)."""
    dirs = list(df["run_dir"].unique())
    return add_labels(df.drop(columns="label"), {d: runs.identity(d) for d in dirs},
                      {d: read_overrides(Path(d)) for d in dirs})


def short_path(run_dir: str | Path, parts: int = 2) -> str:
    """The last ``parts`` components of a run directory (a sweep job's long name cut after its first override)."""
    names = list(Path(run_dir).parts[-parts:])
    names[-1] = names[-1] if len(names[-1]) <= 24 or "," not in names[-1] else names[-1].split(",", 1)[0] + ",..."
    return "/".join(names)


def signature_without(identity: dict[str, str], differ: Sequence[str]) -> tuple:
    """The settings that must agree within a stratum: every ``(key, value)`` of ``identity`` except the keys in
    ``differ`` and below them (``"replay"`` leaves out ``replay.sampler._target_`` too), sorted."""
    return tuple(sorted((k, v) for k, v in identity.items() if not any(k == d or k.startswith(d + ".") for d in differ)))


def number(identity: dict[str, str], key: str) -> float | None:
    """A numeric configuration value, or None when absent or not a number."""
    try:
        return float(identity[key])
    except (KeyError, ValueError, TypeError):
        return None


# --- what a claim hands back --------------------------------------------------------------------------------------

@dataclass
class Effect:
    """``treatment - baseline`` with its interval; ``sign``: the claimed direction (+1 or -1)."""
    estimate: float
    lo: float
    hi: float
    sign: int
    what: str              # e.g. "final return: DQN minus Q-table"
    enough_seeds: bool = True

    @property
    def verdict(self) -> str:
        return verdict(self.estimate, self.lo, self.hi, self.sign, self.enough_seeds)


def verdict(estimate: float, lo: float, hi: float, sign: int, enough_seeds: bool = True) -> str:
    """The verdict rule (module doc): reproduced / not reproduced / inconclusive."""
    if not enough_seeds or not np.all(np.isfinite([estimate, lo, hi])):
        return "inconclusive"
    lo_s, hi_s = sorted((sign * lo, sign * hi))
    if lo_s > 0:
        return "reproduced"
    if hi_s < 0:
        return "not reproduced"
    return "inconclusive"


@dataclass
class Evidence:
    effect: Effect
    table: str                                   # markdown
    figures: list[Path] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


@dataclass
class Claim:
    """The description every claim carries (a :class:`Comparison`, or any object with these attributes and
    an ``evaluate`` method)."""
    key: str
    title: str
    statement: str        # what the seed says
    paper: str
    testbed: str
    agents: str           # the agents compared, in words
    metric: str           # in words
    figure_text: str      # what the figure shows

    def evaluate(self, runs: Runs, out_dir: Path, colours: dict[str, str]) -> Evidence | None:
        raise NotImplementedError


# --- metrics and figures for comparisons ------------------------------------------------------------------------

def final_return(df: pd.DataFrame) -> pd.DataFrame:
    """Per seed (unit): the final return, the mean of its last LAST_EVALS evaluations."""
    f = final_scores(df, LAST_EVALS)
    return f[["env", "label", "unit", "score"]]


def overestimation(df: pd.DataFrame) -> pd.DataFrame:
    """Per seed: the mean of ``q_estimate - mc_return`` over its episodes in the second half of its run: the
    greedy evaluation episodes where they carry the estimate (the greedy policy measured against its own
    return), else the training episodes."""
    ev = df[df["phase"] == "eval"]
    phase = "eval" if "q_estimate" in ev and ev["q_estimate"].notna().any() else "train"
    g = overestimation_gaps(df, 0.5, phase=phase)
    return g.rename(columns={"gap": "score"})[["env", "label", "unit", "score"]]


def curves_figure(df: pd.DataFrame, out: Path, colours: dict[str, str]) -> list[Path]:
    from analysis.plot_curves import plot_curves
    g, _ = plot_curves(df, ("eval",), n_boot=500, colours=colours)
    paths = save_figure(g.figure, out, ("png",))
    plt.close(g.figure)
    return paths


def overestimation_figure(df: pd.DataFrame, out: Path, colours: dict[str, str]) -> list[Path]:
    from analysis.plot_overestimation import plot_overestimation
    fig, _ = plot_overestimation(df, n_boot=500, colours=colours)
    paths = save_figure(fig, out, ("png",))
    plt.close(fig)
    return paths


@dataclass
class Arm:
    name: str
    agents: tuple[str, ...]
    where: Callable[[dict[str, str]], bool] = lambda identity: True

    def holds(self, agent: str, identity: dict[str, str]) -> bool:
        return agent in self.agents and bool(self.where(identity))


@dataclass
class Comparison(Claim):
    """Treatment against baseline on matched runs (see the module doc), with a per-seed ``metric``
    (``df -> [env, label, unit, score]``) and a ``figure`` (``(df, out, colours) -> paths``).

    ``envs``: a predicate on the environment name (the testbed). ``differ``: key prefixes allowed to
    differ between the arms; every other key of the resolved configuration (protocol keys such as
    ``total_steps`` included, execution keys excluded) must agree within a stratum. ``match``: instead of
    that, only these keys (and the ``env.*`` keys) must agree, for arms that differ in much (a Q-table
    against DQN).
    """
    baseline: Arm = None
    treatment: Arm = None
    sign: int = +1
    envs: Callable[[str], bool] = lambda env: True
    differ: tuple[str, ...] = ()
    match: tuple[str, ...] | None = None
    short: str = ""       # the metric's name in the verdict line (default: metric)
    metric_fn: Callable[[pd.DataFrame], pd.DataFrame] = final_return
    figure: Callable[[pd.DataFrame, Path, dict], list[Path]] = curves_figure
    digits: int = 1
    # more per-arm columns for the table: (column name, metric function like metric_fn, digits)
    extras: tuple = ()
    # (key of another claim, why the two may differ): the report sets their verdicts side by side
    contrast: tuple[str, str] | None = None

    def signature(self, identity: dict[str, str]) -> tuple:
        if self.match is None:
            return signature_without(identity, self.differ)
        return tuple(sorted((k, v) for k, v in identity.items() if k in self.match or k.startswith(ENV_PREFIX)))

    def strata(self, runs: Runs) -> list[dict]:
        """Matched groups: ``[{"env", "signature", "baseline": [run dirs], "treatment": [run dirs]}]``."""
        groups: dict[tuple, dict] = {}
        for run_dir, agent, env, ident in runs.on(self.envs):
            for side, arm in (("baseline", self.baseline), ("treatment", self.treatment)):
                if arm.holds(agent, ident):
                    g = groups.setdefault((env, self.signature(ident)), {"env": env, "baseline": [], "treatment": []})
                    g[side].append(run_dir)
        return [g for g in groups.values() if g["baseline"] and g["treatment"]]

    def unmatched(self, runs: Runs) -> str | None:
        """When both arms have runs on one environment but no stratum pairs them: the keys in which the closest
        pair differs (what to align), else None."""
        sides: dict[str, dict[str, list]] = {}
        for run_dir, agent, env, ident in runs.on(self.envs):
            for side, arm in (("baseline", self.baseline), ("treatment", self.treatment)):
                if arm.holds(agent, ident):
                    sides.setdefault(env, {"baseline": [], "treatment": []})[side].append(dict(self.signature(ident)))
        best = None
        for env, s in sorted(sides.items()):
            for a in s["baseline"]:
                for b in s["treatment"]:
                    keys = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
                    if best is None or len(keys) < len(best[1]):
                        best = (env, keys, a, b)
        if best is None or not best[1]:
            return None
        env, keys, a, b = best
        diff = ", ".join(f"`{k}` ({a.get(k, 'unset')} vs {b.get(k, 'unset')})" for k in keys[:6])
        return (f"Runs of both arms were found on {env} ({self.baseline.name}, {self.treatment.name}), but they "
                f"differ in {diff}{' and more' if len(keys) > 6 else ''}: no matched pair.")

    def evaluate(self, runs: Runs, out_dir: Path, colours: dict[str, str]) -> Evidence | None:
        strata = self.strata(runs)
        if not strata:
            return None
        df = runs.returns
        rows, xs, ys, notes, used = [], [], [], [], []
        for i, s in enumerate(strata, 1):
            scores = {}
            for side in ("baseline", "treatment"):
                d = df[df["run_dir"].isin(s[side])]
                used.append(d)
                m = self.metric_fn(d)
                values = m["score"].to_numpy(dtype=float)
                bad = int((~np.isfinite(values)).sum())
                if bad:
                    notes.append(f"stratum {i}, {getattr(self, side).name}: {bad} seed(s) with a non-finite "
                                 "metric, left out")
                scores[side] = values[np.isfinite(values)]
                est = mean_ci(scores[side]) if len(scores[side]) else (np.nan, np.nan, np.nan)
                where = ", ".join(f"`{short_path(r)}`" for r in sorted(s[side]))
                seeds = f"{len(scores[side])}" + (" *" if len(scores[side]) < ROUGH_BELOW else "")
                cells = [fmt_ci(*est, digits=self.digits)]
                for _, fn, digits in self.extras:
                    v = fn(d)["score"].to_numpy(dtype=float)
                    v = v[np.isfinite(v)]
                    cells.append(fmt_ci(*mean_ci(v), digits=digits) if len(v) else "—")
                rows.append(f"| {i} | {s['env']} | {getattr(self, side).name} | {where} | {seeds} | "
                            + " | ".join(cells) + " |")
            if len(scores["baseline"]) and len(scores["treatment"]):
                xs.append(scores["treatment"])
                ys.append(scores["baseline"])
        if not xs:
            return None
        enough = any(len(x) >= 2 and len(y) >= 2 for x, y in zip(xs, ys))
        est, lo, hi = difference_ci(xs, ys)
        effect = Effect(est, lo, hi, self.sign,
                        f"{self.short or self.metric}: {self.treatment.name} minus {self.baseline.name}",
                        enough)
        names = [self.short or self.metric, *(name for name, _, _ in self.extras)]
        table = "\n".join(["| stratum | env | arm | runs | seeds | " + " | ".join(f"{n}: mean [95% CI]" for n in names)
                           + " |", "|---|---|---|---|---|" + "---|" * len(names), *rows])
        if len(strata) > 1:
            notes.append(f"{len(strata)} strata (runs that agree on every other setting); the effect averages them.")
        if any(" * |" in r for r in rows):
            notes.append(f"\\* fewer than {ROUGH_BELOW} seeds: the intervals are rough.")
        data = relabel(pd.concat(used, ignore_index=True), runs)
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        figures = self.figure(data, out_dir / self.key, {**colours, **palette(sorted(data["label"].unique()))})
        return Evidence(effect, table, figures, notes)


# --- the claims that existing CSVs can show -----------------------------------------------------------------------

SMALL_STATE_ENVS = ("FrozenLake-v1", "FrozenLake8x8-v1", "CliffWalking-v0", "CliffWalking-v1", "Taxi-v3", "Taxi-v4",
                    "Chain-v0", "rlzoo/Chain-v0")
# Classic-control tasks with continuous states, where the Q-table must discretise.
CONTINUOUS_STATE_ENVS = ("CartPole-v0", "CartPole-v1", "Acrobot-v1", "MountainCar-v0", "LunarLander-v2", "LunarLander-v3")
PROTOCOL = ("total_steps", "eval_every", "eval_episodes", "eval_epsilon", "gamma")
# Testbeds with claims of their own (analysis.minatar, analysis.maxbias, analysis.corridor): the general ablation
# and overestimation claims leave them out, so that no claim averages over testbeds of different scales.
OWN_CLAIMS_PREFIXES = ("MinAtar/", "rlzoo/MaxBias", "rlzoo/Corridor", "rlzoo/Bandit", "rlzoo/NoisyBandit")


def is_minatar(env: str) -> bool:
    return str(env).startswith("MinAtar/")


def general_testbed(env: str) -> bool:
    """An environment without claims of its own (see :data:`OWN_CLAIMS_PREFIXES`)."""
    return not str(env).startswith(OWN_CLAIMS_PREFIXES)


def _with_replay(identity: dict[str, str]) -> bool:
    """Replay on: the memory holds more than one batch (``buffer_size > batch_size``)."""
    size, batch = number(identity, "buffer_size"), number(identity, "batch_size")
    return size is not None and batch is not None and size > batch


def _hard_sync(identity: dict[str, str]) -> bool:
    return not identity.get("target_sync._target_", "").lower().startswith("soft")


def _with_target(identity: dict[str, str]) -> bool:
    """A target network copied less often than every update (hard sync; soft sync is another variant)."""
    every = number(identity, "target_sync.every")
    return _hard_sync(identity) and every is not None and every > 1


def _without_target(identity: dict[str, str]) -> bool:
    return _hard_sync(identity) and number(identity, "target_sync.every") == 1


def _soft_target(identity: dict[str, str]) -> bool:
    """A Polyak-averaged target network that lags the online one (soft sync with tau < 1)."""
    tau = number(identity, "target_sync.tau")
    return not _hard_sync(identity) and tau is not None and 0 < tau < 1


def _standard_dqn(identity: dict[str, str]) -> bool:
    """Replay and a target network, copied (hard) or averaged (soft, today's default on CartPole)."""
    return _with_replay(identity) and (_with_target(identity) or _soft_target(identity))


CLAIMS: list = [
    Comparison(
        key="qtable_small_states", title="A Q-table is enough where the state space is small",
        statement="With a handful of states a lookup table learns the task outright: tabular Q-learning ends at "
                  "least as well as DQN with the same budget.",
        paper="Watkins and Dayan 1992, Q-learning (convergence of the tabular method); Sutton and Barto 2018, ch. 6",
        testbed="small discrete tasks: FrozenLake, CliffWalking, Taxi, the chain", agents="Q-table vs DQN",
        metric="final return", figure_text="evaluation returns over training",
        baseline=Arm("DQN", ("dqn",), _standard_dqn), treatment=Arm("Q-table", ("qtable",)), sign=+1,
        envs=lambda env: env in SMALL_STATE_ENVS, match=PROTOCOL, digits=2),
    Comparison(
        key="dqn_generalises", title="DQN generalises where a table cannot",
        statement="On continuous states a table must discretise and cannot share what it learns between cells; "
                  "a network generalises, so DQN ends higher than the discretised Q-table.",
        paper="Mnih et al. 2015, Human-level control through deep reinforcement learning (Nature)",
        testbed="continuous-state classic control: CartPole-v1 (4 state variables; the Q-table uses 8 cells per "
                "dimension), Acrobot, MountainCar, LunarLander",
        agents="DQN vs Q-table", metric="final return", figure_text="evaluation returns over training",
        baseline=Arm("Q-table", ("qtable",)), treatment=Arm("DQN", ("dqn",), _standard_dqn), sign=+1,
        envs=lambda env: env in CONTINUOUS_STATE_ENVS, match=PROTOCOL),
    Comparison(
        key="target_network", title="The target network makes DQN stable",
        statement="Without a target network the TD target moves with every update and DQN diverges; with it, "
                  "DQN learns.",
        paper="Mnih et al. 2015, Extended Data Table 3; Young and Tian 2019 (MinAtar), the ablation",
        testbed="the ablation runs on classic control (CartPole-v1 here; MinAtar has its own claim below)",
        agents="DQN with a target network vs DQN whose target is copied after every update (target_sync.every=1), "
               "with and without replay",
        metric="final return", figure_text="evaluation returns over training",
        baseline=Arm("no target network", ("dqn",), _without_target),
        treatment=Arm("target network", ("dqn",), _with_target), sign=+1, differ=("target_sync",),
        envs=general_testbed),
    Comparison(
        key="experience_replay", title="Experience replay makes DQN stable",
        statement="Learning from a large replay memory, rather than from the last few transitions, decorrelates "
                  "the updates; without it DQN learns worse.",
        paper="Mnih et al. 2015, Extended Data Table 3; Young and Tian 2019 (MinAtar), the ablation",
        testbed="the ablation runs on classic control (CartPole-v1 here; MinAtar has its own claim below)",
        agents="DQN with replay vs DQN whose memory holds one batch (buffer_size = batch_size), with and "
               "without a target network",
        metric="final return", figure_text="evaluation returns over training",
        baseline=Arm("no replay", ("dqn",), lambda i: not _with_replay(i)),
        treatment=Arm("replay", ("dqn",), _with_replay), sign=+1, differ=("buffer_size", "replay"),
        envs=general_testbed),
    Comparison(
        key="double_overestimation", title="Double DQN reduces overestimation",
        statement="The max in Q-learning's target overestimates action values; Double DQN's target (online "
                  "network chooses, target network evaluates) brings the estimates closer to the true returns.",
        paper="van Hasselt, Guez and Silver 2016, Deep Reinforcement Learning with Double Q-learning (Figure 3)",
        testbed="matched DQN and Double DQN runs logging q_estimate on classic control and toy-text tasks "
                "(CartPole-v1, FrozenLake here; MinAtar and the maximisation-bias MDP have their own claims)",
        agents="Double DQN vs DQN",
        metric="overestimation: the mean of q_estimate - mc_return (max-Q estimate minus the discounted return "
               "obtained) over the episodes of the second half of the run (the greedy evaluation episodes where "
               "they carry the estimate, else the training episodes)",
        figure_text="value estimate and true discounted return over training, and their gap",
        short="overestimation gap",
        baseline=Arm("DQN", ("dqn",)), treatment=Arm("Double DQN", ("double_dqn",)), sign=-1, differ=("agent",),
        metric_fn=overestimation, figure=overestimation_figure, digits=2, envs=general_testbed),
]


def all_claims() -> list:
    """:data:`CLAIMS` plus those of the plug-in modules that exist (``report_claims()`` in each)."""
    claims = list(CLAIMS)
    for name in PLUGINS:
        if importlib.util.find_spec(name) is None:
            continue
        try:
            module = importlib.import_module(name)
        except Exception as e:  # noqa: BLE001 -- a broken plug-in must not take the report down
            warnings.warn(f"{name}: not loaded ({type(e).__name__}: {e}); its claims are left out", RunWarning)
            continue
        if hasattr(module, "report_claims"):
            claims.extend(module.report_claims())
    return claims


# --- the report -----------------------------------------------------------------------------------------------------

def _anchor(title: str) -> str:
    return re.sub(r"[^a-z0-9 -]", "", title.lower()).replace(" ", "-")


def contrast_line(claim, evidence: Evidence, n_other: int, other, other_evidence: Evidence | None, why: str) -> str:
    """The paragraph that sets a claim's verdict beside another testbed's verdict of the same claim."""
    e = evidence.effect
    link = f"[{n_other}. {other.title}](#{n_other}-{_anchor(other.title)})"
    if other_evidence is None:
        return f"**Against {link}:** that claim had no runs here, so the two testbeds cannot be compared."
    o = other_evidence.effect
    same = e.verdict == o.verdict
    return (f"**Against {link}:** there the verdict is *{o.verdict}* ({fmt_ci(o.estimate, o.lo, o.hi, 1)}), here "
            f"*{e.verdict}*: the two testbeds {'agree' if same else 'differ'}." + ("" if same else f" {why}"))


def write_report(paths: Sequence[str | Path], out_dir: str | Path, claims: Sequence | None = None,
                 command: str | None = None) -> tuple[Path, list[dict], list[Path]]:
    """Evaluate every claim on the runs under ``paths``; write ``out_dir/report.md`` and the figures.

    Returns the report's path, one row per claim (key, title, verdict, effect, lo, hi) and the figures."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    runs = Runs(paths)
    claims = all_claims() if claims is None else list(claims)
    colours = palette(sorted(runs.returns["label"].dropna().unique())) if len(runs.returns) else {}
    results, sections, written = [], [], []
    evidences = [claim.evaluate(runs, out_dir, colours) for claim in claims]
    by_key = {c.key: (n, c, ev) for n, (c, ev) in enumerate(zip(claims, evidences), 1)}
    for n, (claim, evidence) in enumerate(zip(claims, evidences), 1):
        head = [f"## {n}. {claim.title}", "",
                f"**What the seed says.** {claim.statement}", "",
                f"**Source.** {claim.paper}. **Testbed.** {claim.testbed}. **Agents.** {claim.agents}. "
                f"**Metric.** {claim.metric}.", ""]
        if evidence is None:
            results.append(dict(key=claim.key, title=claim.title, verdict="no runs given", effect=np.nan, lo=np.nan,
                                hi=np.nan))
            why = claim.unmatched(runs) if hasattr(claim, "unmatched") else None
            sections += head + ["**Verdict: no runs given** (" + (why or "none of the given directories holds runs "
                                                                   "for it.") + ")", ""]
            continue
        e = evidence.effect
        written += evidence.figures
        results.append(dict(key=claim.key, title=claim.title, verdict=e.verdict, effect=e.estimate, lo=e.lo, hi=e.hi))
        digits = getattr(claim, "digits", 2)
        direction = "higher" if e.sign > 0 else "lower"
        sections += head
        for fig in (f for f in evidence.figures if Path(f).suffix.lower() in (".png", ".svg", ".jpg")):
            sections += [f"![{claim.figure_text}]({Path(fig).relative_to(out_dir).as_posix()})", ""]
        sections += [evidence.table, ""]
        sections += [f"{note}" for note in evidence.notes] + ([""] if evidence.notes else [])
        sections += [f"**Verdict: {e.verdict}.** Effect ({e.what}; the claim: {direction}): "
                     f"{fmt_ci(e.estimate, e.lo, e.hi, digits)}"
                     + ("" if e.enough_seeds else " (fewer than 2 seeds per arm)") + ".", ""]
        contrast = getattr(claim, "contrast", None)
        if contrast and contrast[0] in by_key:
            sections += [contrast_line(claim, evidence, *by_key[contrast[0]], contrast[1]), ""]
    lines = ["# The seed's claims, checked", "",
             f"Runs: {', '.join(f'`{p}`' for p in runs.paths)} ({len(runs.run_dirs)} run directories)."
             + (f" Made with `{command}`." if command else ""), "",
             "| claim | verdict | effect [95% CI] |", "|---|---|---|"]
    for n, r in enumerate(results, 1):
        eff = "—" if r["verdict"] == "no runs given" else fmt_ci(r["effect"], r["lo"], r["hi"], 2)
        lines.append(f"| [{n}. {r['title']}](#{n}-{_anchor(r['title'])}) | {r['verdict']} | {eff} |")
    lines += ["",
              "Method, for every claim: per seed, the claim's metric (final return: the mean of the seed's last "
              f"{LAST_EVALS} evaluations); per arm, the mean over seeds; the effect is treatment minus baseline "
              "on runs that agree on every other setting (a stratum; several strata are averaged), with a 95% "
              "percentile bootstrap interval (2,000 resamples of the seeds of each arm in each stratum). Verdict: "
              "*reproduced* when the interval lies on the claimed side of 0, *not reproduced* when it lies on the "
              "other side, *inconclusive* when it contains 0 or an arm has fewer than 2 seeds. "
              f"With fewer than {ROUGH_BELOW} seeds (marked \\*) the intervals are rough.", "", *sections]
    report = out_dir / "report.md"
    report.write_text("\n".join(lines).rstrip() + "\n")
    # the claims table for a page one level up (results/reference/README.md beside results/reference/report/)
    table = ["| claim | verdict | effect [95% CI] |", "|---|---|---|"]
    for n, r in enumerate(results, 1):
        eff = "—" if r["verdict"] == "no runs given" else fmt_ci(r["effect"], r["lo"], r["hi"], 2)
        table.append(f"| [{n}. {r['title']}]({out_dir.name}/report.md#{n}-{_anchor(r['title'])}) | {r['verdict']} "
                     f"| {eff} |")
    (out_dir / "claims_table.md").write_text("\n".join(table) + "\n")
    return report, results, [out_dir / "claims_table.md", *written]


def main(argv=None) -> int:
    p = Parser(prog="python -m analysis.report", description=__doc__.split("\n\n")[0],
               formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("paths", nargs="+", metavar="DIR", help="run or sweep directories (searched recursively), or globs")
    p.add_argument("--out", default=None, help="directory for report.md and its figures "
                                               "(default: analysis/report in the runs' common directory)")
    p.add_argument("--claims", nargs="*", default=None, metavar="KEY", help="only these claims (by key)")
    args = p.parse_args(argv)
    setup_warnings()
    claims = all_claims()
    if args.claims:
        known = {c.key for c in claims}
        unknown = [k for k in args.claims if k not in known]
        if unknown:
            p.error(f"argument --claims: unknown {unknown}; known: {sorted(known)}")
        claims = [c for c in claims if c.key in args.claims]
    dirs = find_run_dirs(args.paths)
    if not dirs:
        p.error("no run directories under the given paths")
    out = Path(args.out) if args.out else output_base(dirs) / "report"
    command = "python -m analysis.report " + " ".join(args.paths) + (f" --out {args.out}" if args.out else "")
    report, results, figures = write_report(args.paths, out, claims, command)
    for r in results:
        print(f"{r['verdict']:>15}: {r['title']}")
    announce([report, *figures])
    return 0


if __name__ == "__main__":
    sys.exit(main())
