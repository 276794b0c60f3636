"""Fair hyper-parameter tuning with Optuna: every named agent gets the same number of trials over the same search
space, then each tuned configuration is trained again with fresh seeds and the tuned agents are compared.

    python -m rlzoo.tune agents=dqn,double_dqn trials=20 seeds=3 out=results/tuning/cartpole \\
        env=cartpole target_sync=hard total_steps=20000 eval_every=1000

Arguments are ``key=value``. The keys of the tuner are listed in ``KEYS``; every other argument is an rlzoo
override given to every run (trials and final runs alike). Each trial is one rlzoo run (``python -m rlzoo``, in
its own process, in ``<out>/trials/<agent>/<trial>/``) of a population of ``seeds`` members with seeds
``seed .. seed+seeds-1``. Its objective is the **area under the evaluation curve**: for each member, the mean
over the run's evaluations (every ``eval_every`` steps) of that evaluation's mean return over ``eval_episodes``
episodes, then the mean over the members. With evaluations at equal intervals this is the area under the
member's evaluation curve divided by its length: it rewards learning early as well as ending well.

Every agent is tuned with the same sampler (TPE, seeded with ``sampler_seed``), the same number of finished trials
and the same space, and starts from the same ``STARTUP_TRIALS`` random configurations (drawn once with
``sampler_seed`` and given to every agent's study, so that parallel trials cannot change them). Then each agent's best configuration is trained with ``final_seeds`` fresh seeds starting at
``final_seed`` (none of them a tuning seed) into ``<out>/final/<agent>/``, a directory that ``analysis/`` reads
(``python -m analysis.summary <out>/final``). ``<out>/comparison.csv`` and ``.md`` hold the tuned parameters,
the tuning objective and the final runs' objective per agent; ``<out>/trials.csv`` lists every trial.

The study is stored in ``<out>/optuna.db`` (SQLite): running the same command again continues it. Trials already
finished count towards ``trials``; a trial interrupted with the driver is not counted (its run directory stays as
it was) and a new trial takes its place; final runs that are complete are skipped and those with a checkpoint
resume (``rlzoo.sweeps``).
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from omegaconf import OmegaConf

from rlzoo.errors import ConfigError

log = logging.getLogger("rlzoo.tune")
DEFAULT_SPACE = str(Path(__file__).resolve().parent.parent / "conf" / "hydra" / "tune" / "cartpole.yaml")


@dataclass
class Settings:
    agents: list[str] = field(default_factory=lambda: ["dqn", "double_dqn"])
    trials: int = 20            # finished trials per agent
    seeds: int = 3              # population size of a trial (seeds seed .. seed+seeds-1)
    seed: int = 0
    final_seeds: int = 10       # population size of each tuned agent's final run
    final_seed: int = 1000      # first seed of the final runs: fresh, never a tuning seed
    space: str = DEFAULT_SPACE  # YAML search space (conf/hydra/tune/cartpole.yaml describes the format)
    out: str = ""               # output directory; default results/tuning/<time>
    jobs: int = 1               # trials (and final runs) run at the same time
    sampler_seed: int = 0       # TPE's seed: the same for every agent


KEYS = {"agents": "a comma-separated list of agents, e.g. agents=dqn,double_dqn", "trials": "a whole number >= 1",
        "seeds": "a whole number >= 1", "seed": "a whole number >= 0", "final_seeds": "a whole number >= 1",
        "final_seed": "a whole number >= 0", "space": "a YAML file", "out": "a directory",
        "jobs": "a whole number >= 1", "sampler_seed": "a whole number >= 0"}


RESERVED = {"agent": "use agents=a,b,...", "n_seeds": "use seeds= (tuning) and final_seeds= (final runs)",
            "resume": "run the same command again to continue"}


def parse_args(argv: list[str]) -> tuple[Settings, list[str]]:
    """The tuner's own keys into ``Settings``; every other ``key=value`` is an rlzoo override."""
    s, overrides = Settings(), []
    for arg in argv:
        key, sep, value = arg.partition("=")
        if not sep:
            raise ConfigError(f"arguments are key=value, got {arg!r}; the tuner's keys are {', '.join(KEYS)}; "
                              "any other key=value is an rlzoo override")
        if key not in KEYS:
            if key in RESERVED or key.startswith("hydra."):
                raise ConfigError(f"{key} is set by the tuner for each run: {RESERVED.get(key, 'use out= for the directories')}")
            overrides.append(arg)
            continue
        if key == "agents":
            s.agents = [a.strip() for a in value.strip("[]").split(",") if a.strip()]
            if not s.agents:
                raise ConfigError(f"agents must be {KEYS['agents']}, got {value!r}")
        elif key in ("space", "out"):
            if not value:
                raise ConfigError(f"{key} must be {KEYS[key]}, got an empty value")
            setattr(s, key, value)
        else:
            low = 0 if key in ("seed", "final_seed", "sampler_seed") else 1
            if not value.isdigit() or int(value) < low:
                raise ConfigError(f"{key} must be {KEYS[key]}, got {value!r}")
            setattr(s, key, int(value))
    if len(set(s.agents)) != len(s.agents):
        raise ConfigError(f"agents must name each agent once, got {','.join(s.agents)}")
    if s.final_seed < s.seed + s.seeds and s.seed < s.final_seed + s.final_seeds:
        raise ConfigError(f"final_seed={s.final_seed} makes the final runs reuse tuning seeds {s.seed}.."
                          f"{s.seed + s.seeds - 1}: choose final_seed >= {s.seed + s.seeds}")
    if not s.out:
        s.out = f"results/tuning/{time.strftime('%Y-%m-%d_%H-%M-%S')}"
    return s, overrides


# -- the search space ----------------------------------------------------------------------------------------
def load_space(path: str) -> dict:
    """Read and check a search space: ``{key: {choices: [...]} | {low, high[, log][, step]}}``."""
    try:
        space = yaml.safe_load(Path(path).read_text())
    except OSError as e:
        raise ConfigError(f"space={path} cannot be read ({e.strerror or e})") from None
    if not isinstance(space, dict) or not space:
        raise ConfigError(f"space={path} must map rlzoo keys to ranges, e.g. 'lr: {{low: 1.0e-4, high: 1.0e-2, log: true}}'")
    for key, spec in space.items():
        ok = isinstance(spec, dict) and (
            (set(spec) == {"choices"} and isinstance(spec["choices"], list) and spec["choices"]) or
            ({"low", "high"} <= set(spec) <= {"low", "high", "log", "step"} and
             all(isinstance(spec[k], (int, float)) and not isinstance(spec[k], bool) for k in ("low", "high")) and
             spec["low"] < spec["high"] and (not spec.get("log") or spec["low"] > 0)))
        if not ok:
            raise ConfigError(f"space key {key} in {path} must be {{choices: [a, b, ...]}} or {{low: x, high: y}} with "
                              f"low < high (and low > 0 with log: true), optional log and step; got {spec!r}")
    return space


def suggest(trial, space: dict) -> dict:
    """One value per key of ``space`` from an Optuna trial."""
    params = {}
    for key, spec in space.items():
        if "choices" in spec:
            params[key] = trial.suggest_categorical(key, spec["choices"])
        elif isinstance(spec["low"], int) and isinstance(spec["high"], int):
            params[key] = trial.suggest_int(key, spec["low"], spec["high"], log=bool(spec.get("log")),
                                            step=int(spec.get("step", 1)))
        else:
            params[key] = trial.suggest_float(key, float(spec["low"]), float(spec["high"]), log=bool(spec.get("log")),
                                              step=spec.get("step"))
    return params


def as_overrides(params: dict) -> list[str]:
    return [f"{k}={v!r}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items()]


# -- the objective ------------------------------------------------------------------------------------------
def evaluation_areas(returns_csv: str | os.PathLike) -> dict[int, float]:
    """Per member (seed): the mean over evaluations of the evaluation's mean return, i.e. the area under the
    member's evaluation curve divided by its length (evaluations are ``eval_every`` steps apart)."""
    by_eval: dict[tuple[int, int], list[float]] = {}
    with open(returns_csv, newline="") as f:
        for row in csv.DictReader(f):
            if row["phase"] == "eval":
                by_eval.setdefault((int(row["seed"]), int(row["step"])), []).append(float(row["return"]))
    per_seed: dict[int, list[float]] = {}
    for (seed, _), returns in sorted(by_eval.items()):
        per_seed.setdefault(seed, []).append(sum(returns) / len(returns))
    return {seed: sum(means) / len(means) for seed, means in per_seed.items()}


def objective_value(run_dir: Path, seeds: list[int]) -> float:
    """The trial's objective: the mean over its members of ``evaluation_areas``."""
    areas = evaluation_areas(run_dir / "returns.csv")
    missing = [s for s in seeds if s not in areas]
    if missing:
        raise RuntimeError(f"{run_dir}/returns.csv has no evaluation of seed(s) {missing}")
    return sum(areas[s] for s in seeds) / len(seeds)


# -- running rlzoo ------------------------------------------------------------------------------------------
class Interrupted(Exception):
    """An rlzoo run (and so the tuner) was stopped by a signal."""


def run_rlzoo(overrides: list[str], run_dir: Path) -> None:
    """``python -m rlzoo <overrides> hydra.run.dir=<run_dir>``; its output goes to ``<run_dir>.log``."""
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "rlzoo", *overrides, f"hydra.run.dir={run_dir}"]
    with open(f"{run_dir}.log", "a") as out:
        out.write(" ".join(cmd) + "\n")
        out.flush()
        rc = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT).returncode
    if rc < 0 or rc in (128 + 2, 128 + 15):
        raise Interrupted(f"{run_dir}: stopped by a signal")
    if rc != 0:
        tail = Path(f"{run_dir}.log").read_text().strip().splitlines()[-1:]
        raise RuntimeError(f"{run_dir}: rlzoo exited with code {rc}: {tail[0] if tail else ''}")


def compose(agent: str, overrides: list[str]):
    """The run's config as ``python -m rlzoo`` composes it (for the checks made before any run starts)."""
    from hydra import compose as hydra_compose, initialize_config_dir
    from rlzoo.train import CONF_DIR
    with initialize_config_dir(CONF_DIR, version_base="1.3"):
        return hydra_compose("config", overrides=[f"agent={agent}", *overrides])


def check_before_running(s: Settings, overrides: list[str], space: dict) -> None:
    """Compose and validate every agent's config at both ends of the space, so that a typo or an impossible
    setting stops the tuner at once, with rlzoo's own one-line error."""
    from hydra.errors import HydraException
    from rlzoo import config as rlzoo_config
    from rlzoo.train import validate
    def composed(agent, extra):
        try:
            return compose(agent, [*overrides, *extra, f"seed={s.seed}", f"n_seeds={s.seeds}"])
        except HydraException as e:
            message = rlzoo_config.type_error(e) or str(e).splitlines()[0]
            raise ConfigError(f"agent={agent} {' '.join([*overrides, *extra])}: {message}") from None

    for agent in s.agents:
        base = composed(agent, [])
        for key in space:
            if OmegaConf.select(base, key, default="<missing>") == "<missing>":
                raise ConfigError(f"space key {key} is not a key of agent={agent}'s config: choose the group option "
                                  f"that has it on the command line (e.g. target_sync=hard for target_sync.every)")
        for end in (0, -1):
            params = {k: (v["choices"][end] if "choices" in v else v["low" if end == 0 else "high"]) for k, v in space.items()}
            cfg = composed(agent, as_overrides(params))
            validate(cfg)
            if not cfg.eval_every or cfg.eval_every > cfg.total_steps:
                raise ConfigError(f"the objective needs evaluations: eval_every must be between 1 and total_steps="
                                  f"{cfg.total_steps}, got {cfg.eval_every}")


# -- tuning ------------------------------------------------------------------------------------------------
def _counted(t) -> bool:
    """A trial that used up budget: finished, or failed by itself (not interrupted with the tuner)."""
    import optuna
    return t.state == optuna.trial.TrialState.COMPLETE or (
        t.state == optuna.trial.TrialState.FAIL and t.user_attrs.get("status") == "failed")


STARTUP_TRIALS = 10  # TPE's random start-up trials (optuna's n_startup_trials)


def startup_configurations(space: dict, n: int, seed: int) -> list[dict]:
    """The first ``n`` configurations of every agent: drawn at random (seed ``seed``) once, given to each study."""
    import optuna
    draw = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    out = []
    for _ in range(n):
        trial = draw.ask()
        out.append(suggest(trial, space))
        draw.tell(trial, 0.0)
    return out


def tune_agent(agent: str, s: Settings, overrides: list[str], space: dict, out: Path):
    import optuna
    storage = f"sqlite:///{(out / 'optuna.db').resolve()}"
    study = optuna.create_study(study_name=agent, storage=storage, direction="maximize", load_if_exists=True,
                                sampler=optuna.samplers.TPESampler(seed=s.sampler_seed, n_startup_trials=STARTUP_TRIALS))
    settings = json.dumps({"overrides": overrides, "space": space, "seed": s.seed, "seeds": s.seeds}, sort_keys=True)
    if study.user_attrs.get("settings", settings) != settings:
        raise ConfigError(f"{out} holds a study of {agent} made with other settings ({study.user_attrs['settings']}): "
                          "repeat them to continue it (trials= may change), or choose another out=")
    study.set_user_attr("settings", settings)
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        study.tell(t.number, state=optuna.trial.TrialState.FAIL)  # left running by an interrupted tuner
    if not study.trials:  # every agent starts from the same configurations, whatever the order of parallel trials
        for params in startup_configurations(space, min(STARTUP_TRIALS, s.trials), s.sampler_seed):
            study.enqueue_trial(params)
    seeds = list(range(s.seed, s.seed + s.seeds))

    def objective(trial) -> float:
        params = suggest(trial, space)
        run_dir = out / "trials" / agent / f"{trial.number:03d}"
        trial.set_user_attr("status", "running")
        trial.set_user_attr("run_dir", str(run_dir))
        try:
            run_rlzoo([f"agent={agent}", *overrides, *as_overrides(params), f"seed={s.seed}", f"n_seeds={s.seeds}",
                       "progress=false"], run_dir)
            value = objective_value(run_dir, seeds)
        except Interrupted:
            raise
        except Exception as e:
            trial.set_user_attr("status", "failed")
            log.warning("%s trial %d failed: %s", agent, trial.number, e)
            raise
        trial.set_user_attr("status", "done")
        log.info("%s trial %d: objective %.2f with %s", agent, trial.number, value, " ".join(as_overrides(params)))
        return value

    # Parallel trials by ask/tell with one lock around asking: Optuna's own n_jobs threads can pop the same
    # enqueued (WAITING) trial from the SQLite storage twice, and two rlzoo runs then meet in one trial directory.
    lock, running, stop = threading.Lock(), [0], []

    def worker() -> None:
        while not stop:
            with lock:
                if s.trials - sum(_counted(t) for t in study.get_trials(deepcopy=False)) - running[0] <= 0:
                    return
                trial = study.ask()
                running[0] += 1
            try:
                value, state = objective(trial), optuna.trial.TrialState.COMPLETE
            except (RuntimeError, OSError, ValueError):
                value, state = None, optuna.trial.TrialState.FAIL
            except BaseException as e:  # Interrupted, Ctrl-C: the trial is not counted, the tuner stops
                stop.append(e)
                value, state = None, optuna.trial.TrialState.FAIL
            with lock:
                study.tell(trial, value, state=state)
                running[0] -= 1

    threads = [threading.Thread(target=worker) for _ in range(max(1, s.jobs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if stop:
        raise stop[0]
    if not study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
        raise ConfigError(f"every trial of {agent} failed (their output is in {out}/trials/{agent}/*.log): fix the "
                          "cause, then run the command again with a larger trials=")
    return study


def final_run(agent: str, params: dict, s: Settings, overrides: list[str], out: Path) -> Path:
    """The tuned configuration with fresh seeds; a complete run is skipped, a checkpointed one resumed."""
    from rlzoo import sweeps
    run_dir = out / "final" / agent
    args = [f"agent={agent}", *overrides, *as_overrides(params), f"seed={s.final_seed}", f"n_seeds={s.final_seeds}",
            "progress=false"]
    state = sweeps.START
    if run_dir.exists():
        state = sweeps.job_state(run_dir, OmegaConf.to_container(compose(agent, args[1:]), resolve=True))
    if state == sweeps.COMPLETE:
        log.info("%s final run already complete: %s", agent, run_dir)
        return run_dir
    run_rlzoo(args + (["resume=true"] if state == sweeps.RESUME else []), run_dir)
    return run_dir


def write_trials(studies: dict, out: Path) -> None:
    """``<out>/trials.csv``: one row per trial of every agent (state, objective, parameters, run directory)."""
    rows = []
    for agent, study in studies.items():
        for t in study.get_trials(deepcopy=False):
            rows.append({"agent": agent, "trial": t.number, "state": t.state.name,
                         "status": t.user_attrs.get("status", ""),
                         "objective": "" if t.value is None else round(t.value, 2),
                         "params": " ".join(as_overrides(t.params)), "run_dir": t.user_attrs.get("run_dir", "")})
    with open(out / "trials.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["agent", "trial", "state", "status", "objective", "params", "run_dir"])
        w.writeheader()
        w.writerows(rows)


def write_comparison(rows: list[dict], out: Path) -> None:
    keys = list(rows[0])
    with open(out / "comparison.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        w.writerows(rows)
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join(str(r[k]) for k in keys) + " |" for r in rows]
    (out / "comparison.md").write_text("\n".join(lines) + "\n")


def _ci95(values: list[float]) -> float:
    """Half-width of a normal-approximation 95% interval of the mean (1.96 standard errors)."""
    if len(values) < 2:
        return float("nan")
    m = sum(values) / len(values)
    sd = math.sqrt(sum((v - m) ** 2 for v in values) / (len(values) - 1))
    return 1.96 * sd / math.sqrt(len(values))


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s][%(name)s] %(message)s")
    try:
        s, overrides = parse_args(sys.argv[1:] if argv is None else argv)
        space = load_space(s.space)
        check_before_running(s, overrides, space)
        try:
            import optuna
        except ImportError:
            raise ConfigError("rlzoo.tune needs Optuna: pip install -e \".[tune]\"") from None
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        out = Path(s.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "command.txt").write_text("python -m rlzoo.tune " + " ".join(sys.argv[1:] if argv is None else argv) + "\n")
        rows, studies = [], {}
        for agent in s.agents:
            study = studies[agent] = tune_agent(agent, s, overrides, space, out)
            write_trials(studies, out)
            best = study.best_trial
            log.info("%s: best trial %d, objective %.2f: %s", agent, best.number, best.value,
                     " ".join(as_overrides(best.params)))
            run_dir = final_run(agent, best.params, s, overrides, out)
            finals = list(evaluation_areas(run_dir / "returns.csv").values())
            rows.append({"agent": agent, "trials": sum(_counted(t) for t in study.trials), "best_trial": best.number,
                         "tuning_objective": round(best.value, 2),
                         "final_objective": round(sum(finals) / len(finals), 2),
                         "final_ci95": round(_ci95(finals), 2), "final_seeds": len(finals),
                         "params": " ".join(as_overrides(best.params))})
        with open(out / "best.yaml", "w") as f:
            yaml.safe_dump({r["agent"]: r["params"] for r in rows}, f, sort_keys=False)
        write_comparison(rows, out)
        print((out / "comparison.md").read_text(), end="")
        print(f"rlzoo.tune: the tuned agents' runs are in {out}/final: python -m analysis.summary {out}/final")
        return 0
    except ConfigError as e:
        print(f"rlzoo.tune: error: {e}", file=sys.stderr)
        return 2
    except (Interrupted, KeyboardInterrupt) as e:
        print(f"rlzoo.tune: stopped ({e or 'interrupted'}); run the same command again to continue", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
