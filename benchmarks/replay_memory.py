"""Memory of the frame replay (``replay=frames``) for Atari-sized transitions.

Fills ``rlzoo.replay.FrameReplay`` (``FrameStorage`` + ``UniformSampler``) with N transitions of 84x84
frames (synthetic by default: episodes of ``--episode-length`` steps with zero-padded first stacks, frames
drawn from a pool of distinct random images; ``--real`` records Pong with random actions instead, slower),
samples from it, and prints the bytes of storage per transition and the process's peak resident memory.

    python benchmarks/replay_memory.py --transitions 1000000
    python benchmarks/replay_memory.py --transitions 100000 --real

For comparison it also prints what a memory that stores the stacked observation ``s`` (4 frames) per
transition would need, and one that stores both ``s`` and ``s'``.
"""

from __future__ import annotations

import argparse
import resource
import time

import numpy as np

from rlzoo.replay import FrameReplay, FrameStorage

GIB = 2 ** 30


def peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def storage_bytes(s: FrameStorage) -> int:
    tensors = sum(t.numel() * t.element_size() for t in (s.frames, s.action, s.reward, s.terminated))
    return tensors + s.last.nbytes + s.first.nbytes


def synthetic(n: int, episode_length: int, rng):
    pool = rng.integers(0, 256, (64, 84, 84), dtype=np.uint8)
    obs = np.zeros((1, 4, 84, 84), np.uint8)
    obs[0, -1] = pool[0]
    t = 0
    for k in range(n):
        nxt = np.concatenate([obs[:, 1:], pool[(k + 1) % 64][None, None]], axis=1)
        t += 1
        end = t == episode_length
        yield obs, nxt, end
        if end:
            t = 0
            obs = np.zeros_like(obs)
            obs[0, -1] = pool[k % 64]
        else:
            obs = nxt


def real(n: int):
    from rlzoo.envs.atari import make_atari_env
    envs, spec = make_atari_env("ALE/Pong-v5", 1, num_threads=1)
    rng = np.random.default_rng(0)
    obs, _ = envs.reset(seed=[0])
    for _ in range(n):
        nxt, r, term, trunc, info = envs.step(rng.integers(0, spec.num_actions, 1))
        end = bool(term[0] or trunc[0])
        yield obs, (info["final_obs"][None, 0] if end else nxt), end
        obs = nxt


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--transitions", type=int, default=1_000_000, help="replay capacity and transitions added")
    parser.add_argument("--episode-length", type=int, default=1000, help="synthetic episode length (steps)")
    parser.add_argument("--real", action="store_true", help="record Pong frames instead of synthetic ones")
    args = parser.parse_args()
    n = args.transitions
    base = peak_rss_bytes()
    r = FrameReplay(n, 32, (4, 84, 84), np.uint8, [0])
    source = real(n) if args.real else synthetic(n, args.episode_length, np.random.default_rng(0))
    t0 = time.perf_counter()
    zero = np.zeros(1)
    for obs, nxt, end in source:
        r.add(obs, zero.astype(np.int64), zero, nxt, np.array([end]), np.array([False]))
    fill_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    for _ in range(100):
        r.sample()
    sample_ms = (time.perf_counter() - t0) * 10
    size = storage_bytes(r.storage)
    frame = 84 * 84
    print(f"{n:,} transitions ({'Pong, random actions' if args.real else f'synthetic, episodes of {args.episode_length}'}), "
          f"{r.storage.frame_capacity:,} frame slots; usable transitions: {len(r):,}")
    print(f"  storage:            {size / n:,.0f} bytes/transition, {size / GIB:.2f} GiB in all")
    print(f"  peak RSS:           {peak_rss_bytes() / GIB:.2f} GiB (process before allocating: {base / GIB:.2f} GiB)")
    print(f"  fill {fill_s:.0f} s ({n / fill_s:,.0f} adds/s); sample of 32: {sample_ms:.2f} ms")
    print(f"  stacked s per transition would need {4 * frame * n / GIB:.1f} GiB; s and s' {8 * frame * n / GIB:.1f} GiB")


if __name__ == "__main__":
    main()
