"""Training-loop throughput on CartPole-v1: rlzoo (n_seeds=1 and n_seeds=10) against
Stable-Baselines3's DQN with the same hyper-parameters, measured side by side in one process.

Reference hyper-parameters (CleanRL's dqn.py CartPole defaults): MLP 120-84, batch 128, replay 10,000,
learning starts 10,000, one update every 10 steps, target copy every 500 steps (= every 50 updates),
Adam lr 2.5e-4, gamma 0.99, epsilon 1 -> 0.05 over half the run; Huber loss and gradient-norm clip 10
(SB3's defaults, used by both). No evaluation. rlzoo does not evaluate Q at exploring steps
(``log_q_estimates=false``), as SB3 does not.

Prints, per repeat and as medians over repeats, environment steps per second (for rlzoo's population:
total agent-steps / wall time) and the ratio to the SB3 run of the same repeat (the machine's speed
drifts; ratios taken side by side are steadier than either number). Lines:

    sb3 / sb3 2thr          Stable-Baselines3 DQN with 1 / 2 torch threads
    rlzoo P=1, P=10         n_seeds=1 / 10, the shipped CPU path (fast_path=true: rlzoo.nets.numpy_backend)
    rlzoo P=1/P=10 torch    the same with fast_path=false (PyTorch and autograd, the path CUDA and CNNs use)
    rlzoo P=10 2thr         threads=2: numpy's BLAS on both cores
    rlzoo 2 runs x P=5      the 10 agents as two concurrent runs of n_seeds=5 (a parallel sweep over seed=0,5)

    python benchmarks/throughput.py                 # 30,000 steps, 3 repeats
    python benchmarks/throughput.py --steps 50000 --repeats 5

Needs the optional benchmark dependencies: pip install -e ".[bench]".
"""

from __future__ import annotations

import argparse
import multiprocessing
import statistics
import tempfile
import time

import torch
from hydra import compose, initialize_config_dir

from rlzoo import loop
from rlzoo.train import CONF_DIR, build

REFERENCE = dict(hidden=(120, 84), batch=128, buffer=10_000, learning_starts=10_000, train_freq=10,
                 target_every_steps=500, lr=2.5e-4, gamma=0.99, eps_end=0.05, eps_fraction=0.5)


def rlzoo_sps(steps: int, n_seeds: int, threads: int = 1, fast_path: bool = True) -> float:
    t0, t1 = _rlzoo_loop(steps, n_seeds, threads=threads, fast_path=fast_path)
    return steps * n_seeds / (t1 - t0)


def _config(steps: int, n_seeds: int, seed: int = 0, threads: int = 1, fast_path: bool = True, extra=()):
    r = REFERENCE
    overrides = [f"seed={seed}", f"n_seeds={n_seeds}", f"total_steps={steps}", f"network.hidden_sizes=[{r['hidden'][0]},{r['hidden'][1]}]",
                 f"batch_size={r['batch']}", f"buffer_size={r['buffer']}", f"learning_starts={r['learning_starts']}",
                 f"train_freq={r['train_freq']}", f"target_sync.every={r['target_every_steps'] // r['train_freq']}",
                 f"lr={r['lr']}", f"gamma={r['gamma']}", f"eps_end={r['eps_end']}", f"eps_decay_fraction={r['eps_fraction']}",
                 "eval_every=0", "log_q_estimates=false", "loss=huber", "max_grad_norm=10", "device=cpu", "lr_end=null",
                 "nan_check=false",
                 f"threads={threads}", f"fast_path={str(fast_path).lower()}", "checkpoint_every=0", *extra]
    with initialize_config_dir(CONF_DIR, version_base="1.3"):
        return compose("config", overrides=overrides)


def _rlzoo_loop(steps: int, n_seeds: int, seed: int = 0, threads: int = 1, fast_path: bool = True,
                start=None) -> tuple[float, float]:
    """Build a run and time its training loop: ``(start, end)`` on the system's monotonic clock. ``start``:
    a barrier to wait at between building and training."""
    cfg = _config(steps, n_seeds, seed, threads, fast_path)
    with tempfile.TemporaryDirectory() as out:
        run = build(cfg, out, "dqn")
        if start is not None:
            start.wait()
        t0 = time.monotonic()
        loop.run(run)
        t1 = time.monotonic()
        run.close()
    return t0, t1


def _shard(steps: int, n_seeds: int, seed: int, start, queue) -> None:
    queue.put(_rlzoo_loop(steps, n_seeds, seed=seed, start=start))


def rlzoo_split_sps(steps: int, n_seeds: int = 10, processes: int = 2) -> float:
    """``n_seeds`` agents as ``processes`` concurrent runs of consecutive seeds (what a parallel sweep
    ``-m seed=0,5 n_seeds=5 hydra/launcher=joblib hydra.launcher.n_jobs=2`` trains): total agent-steps over
    the time from the common start of their training loops to the end of the last one."""
    ctx = multiprocessing.get_context("fork")
    start, queue = ctx.Barrier(processes), ctx.Queue()
    share = n_seeds // processes
    bounds = [(k * share, n_seeds if k == processes - 1 else (k + 1) * share) for k in range(processes)]
    procs = [ctx.Process(target=_shard, args=(steps, b - a, a, start, queue)) for a, b in bounds]
    for proc in procs:
        proc.start()
    spans = [queue.get() for _ in procs]
    for proc in procs:
        proc.join()
    return steps * n_seeds / (max(t1 for _, t1 in spans) - min(t0 for t0, _ in spans))


def sb3_sps(steps: int, threads: int = 1) -> float:
    import gymnasium as gym
    from stable_baselines3 import DQN

    r = REFERENCE
    torch.set_num_threads(threads)
    model = DQN("MlpPolicy", gym.make("CartPole-v1"), learning_rate=r["lr"], buffer_size=r["buffer"],
                learning_starts=r["learning_starts"], batch_size=r["batch"], tau=1.0, gamma=r["gamma"],
                train_freq=r["train_freq"], gradient_steps=1, target_update_interval=r["target_every_steps"],
                exploration_fraction=r["eps_fraction"], exploration_final_eps=r["eps_end"],
                policy_kwargs=dict(net_arch=list(r["hidden"])), seed=0, device="cpu", verbose=0)
    t0 = time.perf_counter()
    model.learn(total_timesteps=steps)
    return steps / (time.perf_counter() - t0)


CONFIGS = {  # label -> (function, keyword arguments)
    "sb3": (sb3_sps, {}),
    "sb3 2thr": (sb3_sps, dict(threads=2)),
    "rlzoo P=1": (rlzoo_sps, dict(n_seeds=1)),
    "rlzoo P=1 torch": (rlzoo_sps, dict(n_seeds=1, fast_path=False)),
    "rlzoo P=10": (rlzoo_sps, dict(n_seeds=10)),
    "rlzoo P=10 torch": (rlzoo_sps, dict(n_seeds=10, fast_path=False)),
    "rlzoo P=10 2thr": (rlzoo_sps, dict(n_seeds=10, threads=2)),
    "rlzoo 2 runs x P=5": (rlzoo_split_sps, dict(n_seeds=10, processes=2)),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=30_000, help="environment steps per agent (default 30000)")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved repeats; medians are reported")
    parser.add_argument("--only", nargs="+", choices=list(CONFIGS), default=list(CONFIGS),
                        help="configurations to run (default: all)")
    args = parser.parse_args()
    if "sb3" not in args.only:
        args.only = ["sb3", *args.only]  # every ratio is to the SB3 run of the same repeat
    print(f"CartPole-v1, {args.steps:,} steps per agent, {args.repeats} repeats, torch {torch.__version__}")
    results: dict[str, list[float]] = {k: [] for k in args.only}
    for rep in range(args.repeats):
        for label in args.only:
            fn, kwargs = CONFIGS[label]
            results[label].append(fn(args.steps, **kwargs))
        print(f"repeat {rep + 1}: " + ", ".join(f"{k} {v[-1]:,.0f} ({v[-1] / results['sb3'][-1]:.2f}x)"
                                                for k, v in results.items()), flush=True)
    print("\nmedians over repeats: agent-steps per second, and the ratio to SB3 (1 thread) of the same repeat")
    for k, v in results.items():
        ratios = [x / s for x, s in zip(v, results["sb3"])]
        print(f"  {k:18s} {statistics.median(v):10,.0f}   {statistics.median(ratios):5.2f}x"
              f"   (ratios {' / '.join(f'{r:.2f}' for r in ratios)})")


if __name__ == "__main__":
    main()
