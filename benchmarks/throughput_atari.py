"""Atari throughput: the vector-environment backends alone, and the full training loop on one game.

    python benchmarks/throughput_atari.py --envs-only                  # ale_vector vs gymnasium, P=1 and P=4
    python benchmarks/throughput_atari.py --game ALE/Pong-v5 --steps 3000 --n-seeds 1

Full loop: the Nature preset (``+experiment=atari_nature``: Nature CNN, frame replay, RMSProp, batch 32,
one update every 4 steps) with a small replay, timed after the replay holds ``--warmup`` transitions, at
the final epsilon 0.1 (the Q-network runs at every greedy step, as in most of a Nature run). Prints agent
steps per second (per member: total agent-steps / wall time) and emulator frames per second (x4).
``--device cuda`` for a GPU. The gymnasium backend needs OpenCV (pip install opencv-python-headless).
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time

import numpy as np
import torch
from hydra import compose, initialize_config_dir

from rlzoo import loop
from rlzoo.envs.atari import make_atari_env
from rlzoo.train import CONF_DIR, build


def env_sps(backend: str, game: str, num_envs: int, steps: int, num_threads: int = 0) -> float:
    """Agent steps per second (all members) of random play through one backend."""
    envs, spec = make_atari_env(game, num_envs, backend=backend, num_threads=num_threads)
    rng = np.random.default_rng(0)
    envs.reset(seed=list(range(num_envs)))
    actions = rng.integers(0, spec.num_actions, (steps, num_envs))
    t0 = time.perf_counter()
    for a in actions:
        envs.step(a)
    elapsed = time.perf_counter() - t0
    envs.close()
    return steps * num_envs / elapsed


def loop_sps(game: str, steps: int, warmup: int, n_seeds: int, device: str, extra=()) -> float:
    overrides = ["+experiment=atari_nature", f"env.id={game}", f"n_seeds={n_seeds}", f"total_steps={warmup + steps}",
                 f"buffer_size={max(10_000, warmup + steps)}", f"learning_starts={warmup}", "eps_start=0.1",
                 "eps_end=0.1", "eval_every=0", "log_q_estimates=false", "progress=false", f"device={device}",
                 "log_every=1000000", *extra]
    with initialize_config_dir(CONF_DIR, version_base="1.3"):
        cfg = compose("config", overrides=overrides)
    with tempfile.TemporaryDirectory() as out:
        run = build(cfg, out, "dqn")
        settings = run.settings
        run.settings = dataclasses.replace(settings, total_steps=warmup)
        loop.run(run)
        run.settings = settings
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        loop.run(run)
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        elapsed = time.perf_counter() - t0
        run.close()
    return steps * n_seeds / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--game", default="ALE/Pong-v5")
    parser.add_argument("--steps", type=int, default=3000, help="timed agent steps per member")
    parser.add_argument("--warmup", type=int, default=1000, help="steps before timing (fills the replay)")
    parser.add_argument("--n-seeds", type=int, default=1)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--envs-only", action="store_true", help="time the two vector-env backends only")
    parser.add_argument("--num-envs", type=int, nargs="+", default=[1, 4])
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), CUDA {torch.cuda.is_available()}")
    if args.envs_only:
        print(f"{args.game}: random-action agent steps per second (all members), {args.steps} steps")
        for n in args.num_envs:
            for backend in ("ale_vector", "gymnasium"):
                print(f"  P={n:<3d} {backend:11s} {env_sps(backend, args.game, n, args.steps):9,.0f}", flush=True)
        return
    sps = loop_sps(args.game, args.steps, args.warmup, args.n_seeds, args.device)
    print(f"{args.game} full training loop (Nature preset, P={args.n_seeds}, device={args.device}): "
          f"{sps:,.0f} agent-steps/s (all members), {sps / args.n_seeds:,.0f} per member, {4 * sps:,.0f} frames/s")


if __name__ == "__main__":
    main()
