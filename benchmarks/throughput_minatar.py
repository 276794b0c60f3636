"""MinAtar throughput through the real command line, for one or more source trees side by side.

Runs ``python -m rlzoo +experiment=minatar env.game=<game>`` (the MinAtar paper's settings: MinAtar CNN,
RMSProp, batch 32, one update per step) in each tree given, alternating trees within every repeat, and
prints the learning-phase throughput: agent-steps per second over the metrics rows after
``learning_starts`` (the ``sps`` column, which times the loop only), medians over repeats, and each
tree's ratio to the first tree in the same repeat. Configurations:

    P=1        one run, n_seeds=1
    P=10       one run, n_seeds=10, on one core
    P=10 2x5   seeds 0..9 on two cores, as two concurrent runs of n_seeds=5 (what
               ``-m hydra/launcher=joblib hydra.launcher.n_jobs=2 seed=0,5 n_seeds=5`` trains); the
               total agent-steps per second of the two runs over the learning phase

    python benchmarks/throughput_minatar.py --trees . /path/to/other/checkout --repeats 3

``--extra "<overrides>"`` adds overrides to every command of the first tree only, e.g. settings an older
tree does not know.
"""

from __future__ import annotations

import argparse
import csv
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path


def learning_sps(run_dir: Path, learning_starts: int) -> tuple[float, int]:
    """(mean agent-steps per second per member over the rows after learning_starts, steps measured)."""
    rows = [r for r in csv.DictReader(open(run_dir / "metrics.csv")) if int(r["step"]) > learning_starts]
    by_step = {}
    for r in rows:
        by_step[int(r["step"])] = float(r["sps"])  # every member's row of a step has the same sps
    steps = sorted(by_step)
    if not steps:
        raise SystemExit(f"no metrics rows after step {learning_starts} in {run_dir}")
    window = [b - a for a, b in zip([learning_starts] + steps[:-1], steps)]
    seconds = sum(w / by_step[s] for w, s in zip(window, steps))
    return sum(window) / seconds, sum(window)


def run(tree: Path, overrides: list[str], out: Path) -> None:
    cmd = [sys.executable, "-m", "rlzoo", *overrides, f"hydra.run.dir={out}"]
    env = dict(os.environ, PYTHONPATH=str(tree))
    proc = subprocess.run(cmd, cwd=tree, env=env, capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed in {tree}:\n{proc.stderr[-2000:]}")


def measure(tree: Path, config: str, args, extra: list[str]) -> float:
    base = ["+experiment=minatar", f"env.game={args.game}", f"total_steps={args.learning_starts + args.steps}",
            f"learning_starts={args.learning_starts}", "log_every=500", "eval_every=0", "progress=false",
            "checkpoint_every=0", "device=cpu", *extra]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if config == "P=1":
            run(tree, [*base, "n_seeds=1"], tmp / "a")
            return learning_sps(tmp / "a", args.learning_starts)[0]
        if config == "P=10":
            run(tree, [*base, "n_seeds=10"], tmp / "a")
            return 10 * learning_sps(tmp / "a", args.learning_starts)[0]
        # two concurrent runs of 5 seeds each
        procs = []
        for k, seed in enumerate((0, 5)):
            cmd = [sys.executable, "-m", "rlzoo", *base, f"seed={seed}", "n_seeds=5", f"hydra.run.dir={tmp / str(k)}"]
            procs.append(subprocess.Popen(cmd, cwd=tree, env=dict(os.environ, PYTHONPATH=str(tree)),
                                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True))
        for p in procs:
            if p.wait():
                raise SystemExit(f"a 2x5 run failed in {tree}:\n{p.stderr.read()[-2000:]}")
        return sum(5 * learning_sps(tmp / str(k), args.learning_starts)[0] for k in range(2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trees", nargs="+", default=["."], help="source trees to compare (default: this one)")
    parser.add_argument("--game", default="breakout")
    parser.add_argument("--steps", type=int, default=2000, help="learning-phase steps per run (default 2000)")
    parser.add_argument("--learning-starts", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--configs", nargs="+", default=["P=1", "P=10", "P=10 2x5"], choices=["P=1", "P=10", "P=10 2x5"])
    parser.add_argument("--extra", default="", help="overrides for the first tree's commands only")
    args = parser.parse_args()
    trees = [Path(t).resolve() for t in args.trees]
    print(f"MinAtar {args.game}: {args.steps} learning steps per member after {args.learning_starts}, "
          f"{args.repeats} repeats; trees: {', '.join(map(str, trees))}", flush=True)
    results = {(c, t): [] for c in args.configs for t in trees}
    for rep in range(args.repeats):
        for config in args.configs:
            for i, tree in enumerate(trees):
                extra = args.extra.split() if i == 0 else []
                results[config, tree].append(measure(tree, config, args, extra))
            print(f"repeat {rep + 1} {config}: " + ", ".join(f"{t.name} {results[config, t][-1]:,.0f}" for t in trees),
                  flush=True)
    print("\nmedians over repeats: agent-steps per second in the learning phase (ratio to the first tree, per repeat)")
    for config in args.configs:
        first = results[config, trees[0]]
        for tree in trees:
            ratios = [x / f for x, f in zip(results[config, tree], first)]
            print(f"  {config:9s} {str(tree):40s} {statistics.median(results[config, tree]):8,.0f}   "
                  f"{statistics.median(ratios):.2f}x  ({' / '.join(f'{r:.2f}' for r in ratios)})")


if __name__ == "__main__":
    main()
