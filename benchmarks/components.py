"""Throughput of the DQN family's components, each against plain DQN in the same run of this script.

Each component is a named list of Hydra overrides (``COMPONENTS``; add a line for a new one). For every
population size (``n_seeds``, default 1 and 10) and repeat, every component trains ``--steps`` environment steps
per member on CartPole-v1 with the shipped defaults (batch 128, an update every 2 steps from step 1,000), no
evaluation, no checkpoints; only the training loop is timed (``rlzoo.loop.run``, after ``rlzoo.train.build``).
The components run interleaved within a repeat, so the machine's drift hits them alike; the printed ratio is to
plain DQN's run of the same repeat and population size, and the summary gives medians over repeats. Two clocks:
wall time (``time.perf_counter``) and this process's CPU time (``time.process_time``; the learner runs on one
thread), which stays meaningful on a machine whose cores other jobs share.

    python benchmarks/components.py                                  # 6,000 steps, P=1 and P=10, 3 repeats
    python benchmarks/components.py --steps 20000 --repeats 5 --only dqn prioritized
    python benchmarks/components.py --extra +experiment=minatar      # any overrides for every run
    python benchmarks/components.py --samplers                       # only the samplers' own cost
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import torch
from hydra import compose, initialize_config_dir

from rlzoo import loop
from rlzoo.train import CONF_DIR, build

COMPONENTS: dict[str, list[str]] = {  # name -> overrides; "dqn" is the baseline every ratio is taken to
    "dqn": [],
    "n-step (3)": ["n_step=3"],
    "prioritized": ["replay=prioritized"],
    "prioritized + n-step": ["replay=prioritized", "n_step=3"],
    "dqn (autograd)": ["fast_path=false"],  # the learner path of every component below (no numpy fast path)
    "c51": ["agent=c51"],
    "noisy": ["agent=noisy_dqn"],
    "c51 + double + dueling + noisy": ["agent=rainbow", "n_step=1", "replay/sampler=uniform"],
    "rainbow": ["agent=rainbow"],
}

COMMON = ["eval_every=0", "checkpoint_every=0", "progress=false", "nan_check=false", "device=cpu", "threads=1"]


def agent_steps_per_second(overrides: list[str], steps: int, n_seeds: int, extra: list[str]) -> tuple[float, float]:
    """Agent-steps (steps x members) per second of wall time and per second of CPU time."""
    with initialize_config_dir(CONF_DIR, version_base="1.3"):
        cfg = compose("config", overrides=[*COMMON, f"total_steps={steps}", f"n_seeds={n_seeds}", *overrides, *extra])
    with tempfile.TemporaryDirectory() as out:
        run = build(cfg, out, "bench")
        t0, c0 = time.perf_counter(), time.process_time()
        loop.run(run)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        run.close()
    return steps * n_seeds / wall, steps * n_seeds / cpu


def sampler_microseconds(populations: list[int], capacity: int = 100_000, stored: int = 5_000, batch: int = 128,
                         calls: int = 500) -> None:
    """CPU time (``time.process_time``) per call of the samplers alone: drawing a minibatch (uniform and
    prioritized), updating its priorities and inserting one transition (prioritized), over ``stored``
    transitions of a ``capacity``-slot memory."""
    import numpy as np

    from rlzoo.replay import PrioritizedSampler, UniformSampler, ValidSlots
    clock = time.process_time
    print(f"samplers alone: capacity {capacity:,}, {stored:,} stored, batch {batch}, CPU microseconds per call")
    for P in populations:
        prioritized = PrioritizedSampler(list(range(P)), capacity, beta_updates=calls)
        uniform = UniformSampler(range(P))
        for slot in range(stored):
            prioritized.added(slot)
        valid = ValidSlots(np.zeros(P, dtype=np.int64), np.full(P, stored, dtype=np.int64), capacity)
        td = torch.rand(P, batch, generator=torch.Generator().manual_seed(0))
        t = [clock()]
        for _ in range(calls):
            slots, _ = prioritized.sample(valid, batch)
        t.append(clock())
        for _ in range(calls):
            prioritized.update(slots, td)
        t.append(clock())
        for _ in range(calls):
            prioritized.added(7)
        t.append(clock())
        for _ in range(calls):
            uniform.sample(valid, batch)
        t.append(clock())
        us = [(b - a) / calls * 1e6 for a, b in zip(t, t[1:])]
        print(f"  P={P}: prioritized sample {us[0]:.0f}, update {us[1]:.0f}, insert {us[2]:.0f}; "
              f"uniform sample {us[3]:.0f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=6000, help="environment steps per member (default 6000)")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved repeats; medians are reported")
    parser.add_argument("--populations", type=int, nargs="+", default=[1, 10], help="n_seeds values (default 1 10)")
    parser.add_argument("--only", nargs="+", choices=list(COMPONENTS), default=list(COMPONENTS),
                        help="components to run (plain DQN always runs)")
    parser.add_argument("--extra", nargs="*", default=[], help="overrides added to every run, e.g. +experiment=minatar")
    parser.add_argument("--samplers", action="store_true", help="time only the samplers' calls (no training)")
    args = parser.parse_args()
    if args.samplers:
        sampler_microseconds(args.populations)
        return
    names = ["dqn", *[n for n in args.only if n != "dqn"]]
    print(f"{args.steps:,} steps per member, {args.repeats} repeats, populations {args.populations}, "
          f"extra overrides {args.extra or 'none'}, torch {torch.__version__}")
    results = {(n, P): [] for n in names for P in args.populations}
    for rep in range(args.repeats):
        for P in args.populations:
            for name in names:
                results[name, P].append(agent_steps_per_second(COMPONENTS[name], args.steps, P, args.extra))
            base = results["dqn", P][-1]
            print(f"repeat {rep + 1}, P={P} (wall / CPU): " + ", ".join(
                f"{n} {w:,.0f} ({w / base[0]:.2f}x) / {c:,.0f} ({c / base[1]:.2f}x)"
                for n in names for w, c in [results[n, P][-1]]), flush=True)
    for clock, k in (("wall", 0), ("CPU", 1)):
        print(f"\nmedians over repeats, {clock} time: agent-steps per second, and the ratio to plain DQN of the same "
              "repeat and P")
        header = " | ".join(f"P={P} steps/s | P={P} vs DQN" for P in args.populations)
        print(f"| component | overrides | {header} |")
        print("|---|---|" + "---|---|" * len(args.populations))
        for name in names:
            cells = []
            for P in args.populations:
                v, base = [x[k] for x in results[name, P]], [x[k] for x in results["dqn", P]]
                cells += [f"{statistics.median(v):,.0f}", f"{statistics.median(x / b for x, b in zip(v, base)):.2f}x"]
            print(f"| {name} | `{' '.join(COMPONENTS[name]) or '(defaults)'}` | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
