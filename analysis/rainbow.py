"""The report's Rainbow ablation (Hessel et al. 2018, Figure 3; Obando-Ceron and Castro 2021 on small environments):
the full agent against the agent minus each of its six components, one claim per testbed
(``+experiment=rainbow_ablation_cartpole`` and ``+experiment=rainbow_ablation_minatar``).

A run of ``agent=rainbow`` is classified by its resolved configuration, whatever override made it: which of
Double, dueling, distributional, noisy nets, multi-step returns and prioritized replay are off
(:func:`components_off`). The full agent (none off) is matched with each "minus one" run that agrees with it on
every other setting. Per component, the effect is the full agent's final return minus the variant's (the claimed
sign: positive, removing the component costs return) with its own verdict; the claim's effect is the mean of these
drops over the components present, with a bootstrap interval that resamples the full agent's seeds once per
replicate (it is shared by every difference) and each variant's seeds independently.

``analysis.report`` imports :func:`report_claims` (a plug-in: see its module doc).

    python -m analysis.report results/reference --claims rainbow_ablation_cartpole rainbow_ablation_minatar \\
        --out /tmp/rainbow_report
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from analysis.common import palette, save_figure  # noqa: E402
from analysis.report import Claim, Effect, Evidence, Runs, curves_figure, final_return, is_minatar, number, \
    short_path, signature_without, verdict  # noqa: E402
from analysis.stats import difference_ci, mean_ci  # noqa: E402
from analysis.summary import LAST_EVALS, ROUGH_BELOW, fmt_ci  # noqa: E402


def _off(identity: dict[str, str], key: str) -> bool:
    return identity.get(key, "true").lower() == "false"


# (name, display name, is it off in this resolved configuration?)
COMPONENTS: tuple[tuple[str, str, Callable[[dict[str, str]], bool]], ...] = (
    ("double", "Double Q-learning", lambda i: _off(i, "agent.double")),
    ("dueling", "dueling", lambda i: _off(i, "agent.dueling")),
    ("distributional", "distributional (C51)", lambda i: _off(i, "agent.distributional")),
    ("noisy", "noisy nets", lambda i: "noisy" not in i.get("agent.head.layer._target_", "").lower()),
    ("multistep", "multi-step returns", lambda i: (number(i, "n_step") or 1.0) <= 1),
    ("prioritized", "prioritized replay", lambda i: "prioritized" not in i.get("replay.sampler._target_", "").lower()),
)
NAMES = {name: shown for name, shown, _ in COMPONENTS}
# the keys in which the ablation's runs may differ from the full agent (everything else must match)
DIFFER = ("agent.double", "agent.dueling", "agent.distributional", "agent.head.layer", "n_step", "replay.sampler")
# Hessel et al. 2018 (Figure 3, median human-normalised score over 57 games, and its text): removing prioritized
# replay or multi-step returns hurt most, then distributional, then noisy nets; removing dueling or Double made
# little difference in the median.
HESSEL_ORDER = ("prioritized", "multistep", "distributional", "noisy", "dueling", "double")

HESSEL = ("Hessel et al. 2018, Rainbow: Combining Improvements in Deep Reinforcement Learning (Figure 3, the "
          "ablation: prioritized replay and multi-step returns mattered most, then distributional and noisy nets; "
          "dueling and Double made little difference in the median over 57 games); Obando-Ceron and Castro 2021, "
          "Revisiting Rainbow (the same ablation on classic control and MinAtar)")


def components_off(identity: dict[str, str]) -> tuple[str, ...]:
    """The Rainbow components that a run's resolved configuration turns off."""
    return tuple(name for name, _, is_off in COMPONENTS if is_off(identity))


def _variant(off: tuple[str, ...]) -> str:
    return "Rainbow" if not off else "minus " + NAMES[off[0]]


def ablation_bootstrap(full: np.ndarray, minus: list[np.ndarray], reps: int = 2000, ci: float = 0.95,
                       seed: int = 0) -> tuple[float, float, float]:
    """Mean over components of ``mean(full) - mean(minus_c)``, with a percentile bootstrap interval: each replicate
    resamples the full agent's seeds once (shared by every difference) and each variant's seeds independently."""
    point = float(np.mean([full.mean() - m.mean() for m in minus]))
    rng = np.random.default_rng(seed)
    boot = np.empty(reps)
    for r in range(reps):
        f = full[rng.integers(0, len(full), len(full))].mean()
        boot[r] = np.mean([f - m[rng.integers(0, len(m), len(m))].mean() for m in minus])
    lo, hi = np.percentile(boot, [50 * (1 - ci), 100 - 50 * (1 - ci)])
    return point, float(lo), float(hi)


def difference(full: np.ndarray, minus: np.ndarray, reps: int = 2000, seed: int = 0) -> tuple[float, float, float]:
    return ablation_bootstrap(full, [minus], reps=reps, seed=seed)


def effects_figure(effects: list[tuple[str, float, float, float]], out: Path) -> list[Path]:
    """Horizontal bars: per component, the full agent's final return minus the variant's, with its 95% interval."""
    fig, ax = plt.subplots(figsize=(6.5, 0.45 * len(effects) + 1.2))
    names = [n for n, *_ in effects][::-1]
    est = np.array([e for _, e, _, _ in effects][::-1])
    lo = np.array([lo for _, _, lo, _ in effects][::-1])
    hi = np.array([hi for _, _, _, hi in effects][::-1])
    colours = ["#2ca02c" if l > 0 else "#d62728" if h < 0 else "#7f7f7f" for l, h in zip(lo, hi)]
    ax.barh(names, est, color=colours, xerr=np.vstack([est - lo, hi - est]), capsize=3)
    ax.axvline(0, color="black", lw=0.8)
    ax.set_xlabel("final return: Rainbow minus the variant (> 0: the component helps)")
    fig.tight_layout()
    paths = save_figure(fig, out, ("png",))
    plt.close(fig)
    return paths


@dataclass
class RainbowAblation(Claim):
    envs: Callable[[str], bool] = lambda env: True
    digits: int = 1

    def strata(self, runs: Runs) -> list[dict]:
        """``[{"env", "full": [dirs], "minus": {component: [dirs]}}]``: matched full and minus-one runs."""
        groups: dict[tuple, dict] = {}
        for run_dir, agent, env, ident in runs.on(self.envs):
            if agent != "rainbow":
                continue
            off = components_off(ident)
            if len(off) > 1:
                continue
            g = groups.setdefault((env, signature_without(ident, DIFFER)), {"env": env, "full": [], "minus": {}})
            if off:
                g["minus"].setdefault(off[0], []).append(run_dir)
            else:
                g["full"].append(run_dir)
        return [g for g in groups.values() if g["full"] and g["minus"]]

    def evaluate(self, runs: Runs, out_dir: Path, colours: dict[str, str]) -> Evidence | None:
        strata = self.strata(runs)
        if not strata:
            return None
        df = runs.returns
        notes, effects, used = [], [], []
        full_scores, minus_scores = [], []
        rows = []

        def scores_of(dirs):
            d = df[df["run_dir"].isin(dirs)]
            used.append(d.assign(label=_variant(components_off(runs.identity(dirs[0])))))
            v = final_return(d)["score"].to_numpy(dtype=float)
            return v[np.isfinite(v)]

        for i, s in enumerate(strata, 1):
            full = scores_of(s["full"])
            rough = " *" if len(full) < ROUGH_BELOW else ""
            rows.append(f"| {i} | {s['env']} | Rainbow | {', '.join(f'`{short_path(r)}`' for r in sorted(s['full']))} "
                        f"| {len(full)}{rough} | {fmt_ci(*mean_ci(full), digits=self.digits)} | — | — | — |")
            for name in HESSEL_ORDER:
                if name not in s["minus"]:
                    continue
                minus = scores_of(s["minus"][name])
                if len(full) == 0 or len(minus) == 0:
                    continue
                est, lo, hi = difference(full, minus)
                enough = len(full) >= 2 and len(minus) >= 2
                effects.append((f"{NAMES[name]}" + (f" ({s['env']})" if len(strata) > 1 else ""), est, lo, hi))
                full_scores.append(full)
                minus_scores.append(minus)
                rough = " *" if len(minus) < ROUGH_BELOW else ""
                rows.append(f"| {i} | {s['env']} | minus {NAMES[name]} | "
                            f"{', '.join(f'`{short_path(r)}`' for r in sorted(s['minus'][name]))} | {len(minus)}{rough} | "
                            f"{fmt_ci(*mean_ci(minus), digits=self.digits)} | {fmt_ci(est, lo, hi, self.digits)} | "
                            f"{verdict(est, lo, hi, +1, enough)} | {HESSEL_ORDER.index(name) + 1} |")
        if not effects:
            return None
        if len(strata) == 1:
            est, lo, hi = ablation_bootstrap(full_scores[0], minus_scores)
        else:  # several testbeds or settings: each difference resampled on its own
            est, lo, hi = difference_ci(full_scores, minus_scores)
        enough = all(len(f) >= 2 for f in full_scores) and all(len(m) >= 2 for m in minus_scores)
        effect = Effect(est, lo, hi, +1, f"final return: Rainbow minus the variant, averaged over the "
                                         f"{len(effects)} components removed", enough)
        table = "\n".join([
            "| stratum | env | agent | runs | seeds | final return: mean [95% CI] | Rainbow minus it [95% CI] "
            "| verdict (component helps) | rank in Hessel et al. |",
            "|---|---|---|---|---|---|---|---|---|", *rows])
        ranked = sorted(effects, key=lambda e: -e[1])
        notes.append("Measured order of the components, largest drop first: "
                     + ", ".join(f"{n} ({e:+.{self.digits}f})" for n, e, _, _ in ranked)
                     + ". Hessel et al.'s order on Atari: " + ", ".join(NAMES[n] for n in HESSEL_ORDER) + ".")
        if len(strata) > 1:
            notes.append(f"{len(strata)} strata (runs that agree on every other setting); the effect averages them.")
        if any(" * |" in r for r in rows):
            notes.append(f"\\* fewer than {ROUGH_BELOW} seeds: the intervals are rough.")
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        data = pd.concat(used, ignore_index=True)
        figures = curves_figure(data, out_dir / self.key, palette(sorted(data["label"].unique())))
        figures += effects_figure(effects, out_dir / f"{self.key}_effects")
        return Evidence(effect, table, figures, notes)


def _cartpole(env: str) -> bool:
    return str(env).startswith("CartPole")


def report_claims() -> list:
    final = f"final return (each seed's mean over its last {LAST_EVALS} greedy evaluations)"
    statement = ("Each of Rainbow's six components adds to it: the full agent ends higher than the agent minus any "
                 "one of Double Q-learning, dueling, distributional (C51), noisy nets, multi-step returns and "
                 "prioritized replay. The claim's effect is the mean drop over the six; the table gives each "
                 "component's own effect and verdict, and its rank in Hessel et al.'s ablation.")
    agents = "Rainbow vs Rainbow minus one component (six variants, `+ablation=no_<part>`)"
    figure_text = "evaluation returns over training, and each component's effect with its 95% interval"
    return [
        RainbowAblation(
            key="rainbow_ablation_cartpole", title="Every Rainbow component helps (CartPole)",
            statement=statement, paper=HESSEL,
            testbed="CartPole-v1, `+experiment=rainbow_ablation_cartpole`: rlzoo's CartPole settings (Adam 5e-4 "
                    "decaying to 0, batch 128, Polyak target 0.005), 51 atoms on [-100, 100], 3-step returns, "
                    "prioritized replay alpha 0.5, 30k steps, 5 seeds",
            agents=agents, metric=final, figure_text=figure_text, envs=_cartpole),
        RainbowAblation(
            key="rainbow_ablation_minatar", title="Every Rainbow component helps (MinAtar)",
            statement=statement, paper=HESSEL,
            testbed="MinAtar Space Invaders, `+experiment=rainbow_ablation_minatar`: Revisiting Rainbow's MinAtar "
                    "agent (Adam 1e-4, eps 3.125e-4, 51 atoms on [-100, 100], 3-step returns, target copied every "
                    "1,000 frames, one update every 4 frames, buffer 100k, batch 32) at 100k frames instead of "
                    "their 10M, 5 seeds, 5 greedy episodes every 10k frames",
            agents=agents, metric=final, figure_text=figure_text, envs=is_minatar, digits=2),
    ]
