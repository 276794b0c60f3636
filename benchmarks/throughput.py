"""Training-loop throughput on CartPole-v1: rlzoo (n_seeds=1 and n_seeds=10) against
Stable-Baselines3's DQN with the same hyper-parameters, measured side by side in one process.

Reference hyper-parameters (CleanRL's dqn.py CartPole defaults): MLP 120-84, batch 128, replay 10,000,
learning starts 10,000, one update every 10 steps, target copy every 500 steps (= every 50 updates),
Adam lr 2.5e-4, gamma 0.99, epsilon 1 -> 0.05 over half the run; Huber loss and gradient-norm clip 10
(SB3's defaults, used by both). No evaluation. rlzoo does not evaluate Q at exploring steps
(``log_q_estimates=false``), as SB3 does not.

Prints, per repeat and as medians over repeats, environment steps per second (per agent for
rlzoo's population: total agent-steps / wall time) and the ratios to SB3. Every line uses one torch
thread, except "rlzoo P=10 2thr" (torch_threads=2: the population's batched matmuls on both cores).

    python benchmarks/throughput.py                 # 30,000 steps, 3 repeats
    python benchmarks/throughput.py --steps 50000 --repeats 5

Needs the optional benchmark dependencies: pip install -e ".[bench]".
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

REFERENCE = dict(hidden=(120, 84), batch=128, buffer=10_000, learning_starts=10_000, train_freq=10,
                 target_every_steps=500, lr=2.5e-4, gamma=0.99, eps_end=0.05, eps_fraction=0.5)


def rlzoo_sps(steps: int, n_seeds: int, threads: int = 1) -> float:
    r = REFERENCE
    overrides = [f"n_seeds={n_seeds}", f"total_steps={steps}", f"network.hidden_sizes=[{r['hidden'][0]},{r['hidden'][1]}]",
                 f"batch_size={r['batch']}", f"buffer_size={r['buffer']}", f"learning_starts={r['learning_starts']}",
                 f"train_freq={r['train_freq']}", f"target_sync.every={r['target_every_steps'] // r['train_freq']}",
                 f"lr={r['lr']}", f"gamma={r['gamma']}", f"eps_end={r['eps_end']}", f"eps_decay_fraction={r['eps_fraction']}",
                 "eval_every=0", "log_q_estimates=false", "loss=huber", "max_grad_norm=10", "device=cpu",
                 f"threads={threads}", "checkpoint_every=0"]
    with initialize_config_dir(CONF_DIR, version_base="1.3"):
        cfg = compose("config", overrides=overrides)
    with tempfile.TemporaryDirectory() as out:
        p = build(cfg, out, "dqn")
        t0 = time.perf_counter()
        loop.run(p["envs"], p["eval_envs"], p["agent"], p["replay"], p["target_sync"], p["logger"], seeds=p["seeds"],
                 num_actions=p["spec"].num_actions, total_steps=steps, learning_starts=cfg.learning_starts,
                 train_freq=cfg.train_freq, epsilon=p["schedule"], gamma=cfg.gamma, eval_every=0, eval_episodes=1,
                 eval_epsilon=0.0, log_every=cfg.log_every, log_q_estimates=False)
        elapsed = time.perf_counter() - t0
        p["logger"].close()
    return steps * n_seeds / elapsed


def sb3_sps(steps: int) -> float:
    import gymnasium as gym
    from stable_baselines3 import DQN

    r = REFERENCE
    torch.set_num_threads(1)
    model = DQN("MlpPolicy", gym.make("CartPole-v1"), learning_rate=r["lr"], buffer_size=r["buffer"],
                learning_starts=r["learning_starts"], batch_size=r["batch"], tau=1.0, gamma=r["gamma"],
                train_freq=r["train_freq"], gradient_steps=1, target_update_interval=r["target_every_steps"],
                exploration_fraction=r["eps_fraction"], exploration_final_eps=r["eps_end"],
                policy_kwargs=dict(net_arch=list(r["hidden"])), seed=0, device="cpu", verbose=0)
    t0 = time.perf_counter()
    model.learn(total_timesteps=steps)
    return steps / (time.perf_counter() - t0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=30_000, help="environment steps per agent (default 30000)")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved repeats; medians are reported")
    parser.add_argument("--no-sb3", action="store_true", help="skip the Stable-Baselines3 reference")
    args = parser.parse_args()
    print(f"CartPole-v1, {args.steps:,} steps per agent, {args.repeats} repeats, torch {torch.__version__}")
    results: dict[str, list[float]] = {"sb3": [], "rlzoo P=1": [], "rlzoo P=10": [], "rlzoo P=10 2thr": []}
    for rep in range(args.repeats):
        if not args.no_sb3:
            results["sb3"].append(sb3_sps(args.steps))
        results["rlzoo P=1"].append(rlzoo_sps(args.steps, 1))
        results["rlzoo P=10"].append(rlzoo_sps(args.steps, 10))
        results["rlzoo P=10 2thr"].append(rlzoo_sps(args.steps, 10, threads=2))
        print(f"repeat {rep + 1}: " + ", ".join(f"{k} {v[-1]:,.0f}" for k, v in results.items() if v), flush=True)
    med = {k: statistics.median(v) for k, v in results.items() if v}
    print("\nmedian agent-steps per second")
    for k, v in med.items():
        ratio = f"  ({v / med['sb3']:.2f}x SB3)" if "sb3" in med and k != "sb3" else ""
        print(f"  {k:15s} {v:10,.0f}{ratio}")


if __name__ == "__main__":
    main()
