"""What a run prints: a progress line while it trains, and a summary when it ends.

``Progress``: on a terminal, one line redrawn in place by tqdm, cut to the terminal's width (it never wraps,
so it redraws instead of scrolling) and ended with a newline when the run ends; elsewhere (a batch log, a
pipe) or in a job of a parallel sweep, a plain line every ``log_interval`` seconds. The line shows the step,
steps per second, the time left (ETA), the latest evaluation's mean return over the members and the last
training return of each member. In a sweep every line starts with the job's tag (``[3 dqn CartPole-v1]``),
so the lines of jobs running side by side can be told apart.

``run_summary``: what ``python -m rlzoo`` prints at the end of a run (wall time, the last and the best
evaluation, where the results are, the commands to look at them); ``sweep_summary``: the same, one line per
run, at the end of a sweep. Both read the run's ``returns.csv``, so they also cover a resumed run.
"""

from __future__ import annotations

import csv
import math
import shlex
import shutil
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Callable, Sequence, TextIO


def format_duration(seconds: float) -> str:
    """``75`` -> ``1 min 15 s``; ``3725`` -> ``1 h 02 min``; ``4.2`` -> ``4.2 s``."""
    if not math.isfinite(seconds):
        return "?"
    if seconds < 10:
        return f"{seconds:.1f} s"
    s = int(round(seconds))
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s" if s >= 60 else f"{s} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


def _clock(seconds: float) -> str:
    """``125`` -> ``2:05``; ``3725`` -> ``1:02:05``; unknown -> ``?``."""
    if not math.isfinite(seconds) or seconds < 0:
        return "?"
    s = int(round(seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


def _returns_text(recent: Sequence[float | None], room: int) -> str:
    """The members' last training returns in at most ``room`` characters: each one while they fit, else
    their mean."""
    known = [r for r in recent if r is not None]
    if not known:
        return "ret -"
    each = "ret " + " ".join(f"{r:.0f}" if r is not None else "-" for r in recent)
    if len(each) <= room:
        return each
    return f"ret mean {sum(known) / len(known):.1f} ({len(known)}/{len(recent)})"


def _width() -> int:
    """The terminal's width less its last column (where some terminals wrap), at least 20."""
    return max(shutil.get_terminal_size((80, 24)).columns - 1, 20)


class Progress:
    """The progress line of one run (see the module docstring).

    Args:
        total: the step at which the run ends.
        stream: where to write (stderr by default).
        enabled: False prints nothing.
        tag: prefixed to every line (``[tag] ...``); a sweep's job number and what it runs.
        plain: True: plain lines even on a terminal (a job of a parallel sweep); None: decide from the stream.
        log_interval: seconds between plain lines.
        start_step: the step a resumed run starts from (the ETA counts from it).
        clock: the time source (tests pass a fake one).
    """

    def __init__(self, total: int, stream: TextIO | None = None, enabled: bool = True, tag: str = "",
                 plain: bool | None = None, tty_interval: float = 0.5, log_interval: float = 30.0,
                 start_step: int = 0, clock: Callable[[], float] = time.perf_counter):
        self.total = int(total)
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.tag = tag
        is_tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.tty = is_tty if plain is None else (is_tty and not plain)
        self.interval = tty_interval if self.tty else log_interval
        self.clock = clock
        self.start = self._last = clock()
        self.start_step = self.step = int(start_step)
        self.eval_mean: float | None = None
        self.eval_step: int | None = None
        self._bar = None
        self._closed = False

    # -- what is shown ---------------------------------------------------------------------------------------
    def restart(self, step: int) -> None:
        """The run resumes at ``step``: the ETA counts from here."""
        self.start, self.start_step, self.step = self.clock(), int(step), int(step)

    def eta(self, step: int) -> float:
        """Seconds left at the average speed since the start (inf before the first step)."""
        done, elapsed = step - self.start_step, self.clock() - self.start
        if done <= 0 or elapsed <= 0:
            return math.inf
        return (self.total - step) * elapsed / done

    def evaluated(self, step: int, member_means: Sequence[float]) -> None:
        """An evaluation finished: ``member_means`` is each member's mean return."""
        if len(member_means):
            self.eval_mean, self.eval_step = float(sum(member_means) / len(member_means)), int(step)

    def status(self, sps: float, recent: Sequence[float | None], room: int = 10_000) -> str:
        """``<sps>/s eval <mean> ret <...>`` in at most ``room`` characters (the returns give way first)."""
        text = f"{sps:,.0f}/s"
        if self.eval_mean is not None:
            text += f" eval {self.eval_mean:.1f}"
        return f"{text} {_returns_text(recent, max(room - len(text) - 1, 0))}"

    def line(self, step: int, sps: float, recent: Sequence[float | None], width: int | None = None) -> str:
        """The plain line: tag, step, percentage, elapsed < ETA, steps/s, evaluation, returns; cut to ``width``."""
        pct = 100.0 * step / max(self.total, 1)
        head = (f"{f'[{self.tag}] ' if self.tag else ''}step {step:,}/{self.total:,} ({pct:.0f}%) "
                f"{_clock(self.clock() - self.start)}<{_clock(self.eta(step))} ")
        room = (width - len(head)) if width else 10_000
        text = head + self.status(sps, recent, room)
        return text[:width] if width else text

    # -- writing -------------------------------------------------------------------------------------------------
    def _tqdm(self):
        if self._bar is None:
            from tqdm import tqdm
            self._bar = tqdm(total=self.total, initial=self.start_step, file=self.stream, ncols=_width(),
                             leave=True, unit="step", unit_scale=True, mininterval=0, miniters=1, smoothing=0.1,
                             desc=f"[{self.tag}]: " if self.tag else None,
                             bar_format="{desc}{percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} "
                                        "[{elapsed}<{remaining}{postfix}]")
        return self._bar

    def update(self, step: int, sps: float, recent: Sequence[float | None], force: bool = False) -> None:
        now = self.clock()
        if not self.enabled or self._closed or (not force and now - self._last < self.interval):
            return
        self._last, self.step = now, int(step)
        if self.tty:
            bar = self._tqdm()
            bar.ncols = width = _width()
            room = width - 44 - (len(self.tag) + 4 if self.tag else 0)  # the rest: 100%|bar| 100k/100k [0:00<0:00, ]
            bar.set_postfix_str(self.status(sps, recent, room=max(room, 12)), refresh=False)
            bar.update(step - bar.n)  # tqdm redraws (cut to the terminal's width)
        else:
            self.stream.write(self.line(step, sps, recent) + "\n")
            self.stream.flush()

    def close(self) -> None:
        """End the line with a newline (what is printed next starts on a line of its own)."""
        if self._closed:
            return
        self._closed = True
        if self._bar is not None:
            self._bar.close()  # leave=True: the last state stays on screen, followed by a newline


# -- summaries ------------------------------------------------------------------------------------------------
def read_evaluations(run_dir: Path, phase: str = "eval") -> dict[int, dict[int, list[float]]]:
    """``{seed: {step: [returns]}}`` of ``phase`` rows of ``run_dir/returns.csv`` ({} if none)."""
    out: dict[int, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    path = Path(run_dir) / "returns.csv"
    if not path.exists():
        return {}
    with open(path, newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            try:
                if row.get("phase") == phase:
                    out[int(row["seed"])][int(row["step"])].append(float(row["return"]))
            except (KeyError, TypeError, ValueError):  # a row cut by a killed writer
                continue
    return {s: dict(v) for s, v in out.items()}


def evaluation_stats(evals: dict[int, dict[int, list[float]]]) -> dict | None:
    """From ``read_evaluations``: per member (seed) the last and the best evaluation mean (with their steps),
    and over the members the mean of their last evaluations and the best mean over the steps every member
    evaluated. None without evaluations."""
    if not evals:
        return None
    seeds = sorted(evals)
    means = {s: {step: sum(r) / len(r) for step, r in evals[s].items()} for s in seeds}
    last = {s: max(means[s].items()) for s in seeds}  # (step, mean) of the latest step
    best = {s: max(means[s].items(), key=lambda kv: (kv[1], -kv[0])) for s in seeds}  # earliest best
    common = set.intersection(*(set(means[s]) for s in seeds))
    by_step = {step: sum(means[s][step] for s in seeds) / len(seeds) for step in common}
    best_pop = max(by_step.items(), key=lambda kv: (kv[1], -kv[0])) if by_step else None
    episodes = len(evals[seeds[0]][last[seeds[0]][0]])
    return {"seeds": seeds, "last": last, "best": best, "last_mean": sum(v for _, v in last.values()) / len(seeds),
            "last_step": min(step for step, _ in last.values()), "best_mean": best_pop, "episodes": episodes}


def _next_commands(run_dir: Path, with_watch: bool, phase: str) -> list[str]:
    q = shlex.quote(str(run_dir))
    cmds = [f"python -m analysis.plot_curves {q}{' --phase train' if phase == 'train' else ''}",
            f"python -m analysis.summary {q}"]
    if with_watch:
        cmds.append(f"python -m rlzoo.watch {q}")
    return cmds


def run_summary(run_dir, seconds: float, title: str = "", models: Sequence[str | Path] = (),
                max_members: int = 10) -> str:
    """The end-of-run report (several lines). ``models``: the model files written (paths)."""
    run_dir = Path(run_dir)
    lines = [f"rlzoo: finished{' ' + title if title else ''} in {format_duration(seconds)}"]
    stats = evaluation_stats(read_evaluations(run_dir))
    phase = "eval"
    if stats is None:
        train = evaluation_stats(read_evaluations(run_dir, "train"))
        phase = "train"
        if train is None:
            lines.append("  no episode finished")
        else:
            lines.append("  no evaluations (eval_every=0); last training episode return, mean over members: "
                         f"{train['last_mean']:.1f}")
    else:
        seeds = stats["seeds"]
        episodes = f"{stats['episodes']} episode{'s' if stats['episodes'] != 1 else ''}"
        lines.append(f"  last evaluation (step {stats['last_step']:,}, {episodes} per member): "
                     f"mean {stats['last_mean']:.1f}" + (f" over {len(seeds)} members" if len(seeds) > 1 else ""))
        if stats["best_mean"] is not None:
            step, value = stats["best_mean"]
            lines.append(f"  best evaluation: mean {value:.1f} at step {step:,}")
        if 1 < len(seeds) <= max_members:
            lines.append("    seed: last / best (step)")
            for s in seeds:
                (_, lv), (bs, bv) = stats["last"][s], stats["best"][s]
                lines.append(f"    {s:>4}: {lv:7.1f} / {bv:7.1f} ({bs:,})")
    written = [p.name for p in (run_dir / n for n in ("returns.csv", "metrics.csv", "checkpoint.pt")) if p.exists()]
    written += [str(Path(m).relative_to(run_dir)) if Path(m).is_relative_to(run_dir) else str(m) for m in models]
    lines.append(f"  results: {run_dir}/ ({', '.join(written)})")
    lines.append("  next:")
    lines += [f"    {c}" for c in _next_commands(run_dir, with_watch=bool(models), phase=phase)]
    return "\n".join(lines)


def sweep_summary(sweep_dir) -> str:
    """One line per run of a sweep (its last and best evaluation mean over members), then the commands that
    look at the whole sweep."""
    sweep_dir = Path(sweep_dir)
    runs = sorted({p.parent for p in sweep_dir.rglob("returns.csv") if ".hydra" not in p.parts})
    lines = [f"rlzoo: sweep finished: {len(runs)} run(s) in {sweep_dir}"]
    width = max((len(str(r.relative_to(sweep_dir))) for r in runs), default=0)
    for r in runs:
        stats = evaluation_stats(read_evaluations(r))
        name = str(r.relative_to(sweep_dir)).ljust(width)
        if stats is None:
            lines.append(f"  {name}  no evaluations")
        else:
            best = f", best {stats['best_mean'][1]:.1f} at {stats['best_mean'][0]:,}" if stats["best_mean"] else ""
            lines.append(f"  {name}  last {stats['last_mean']:.1f} (step {stats['last_step']:,}){best}")
    lines.append("  next:")
    lines += [f"    {c}" for c in _next_commands(sweep_dir, with_watch=False, phase="eval")]
    return "\n".join(lines)
