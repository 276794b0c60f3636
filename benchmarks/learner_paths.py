"""Could one autograd learner path replace the numpy fast path? One DQN learner step and one acting call,
timed for several implementations on CartPole shapes.

Shapes: observation dim 4, 2 actions, MLP 120-84, batch 128, float32, one thread (torch and the BLAS
pools), populations P=1 and P=10. A learner step is: online forward on ``obs``, target forward on
``next_obs``, DQN target ``r + gamma (1 - terminated) max_a' Q_target(s', a')``, Huber loss (mean over the
batch per member), backward, per-member gradient clipping at norm 10, fused Adam step. Acting is the
online forward of one observation per member, numpy ``[P, 4]`` in, numpy ``[P, 2]`` out (what the
training loop calls every environment step).

Implementations:

    fast       rlzoo DQNAgent(fast_path=True): numpy forward and hand-written backward
               (rlzoo/nets/numpy_backend.py), fused Adam; acting with agent.q_values
    autograd   rlzoo DQNAgent(fast_path=False): batched PopLinear modules and autograd
    func       torch.func: P copies of a plain single-member nn.Sequential stacked with
               stack_module_state; vmap(grad(member loss + per-member clip)) over members;
               fused Adam over the stacked tensors; acting through vmap(functional_call)
    func+comp  the same two functions under torch.compile (compile time reported separately)
    auto+comp  autograd's loss function (forwards, target, Huber) under torch.compile; backward,
               clipping and Adam eager

Every implementation starts from the same weights (member i seeded with i) and must give the same
per-member loss, pre-clip gradient norm and acting Q-values as ``autograd`` on the same batch (1e-4
relative); the check is printed. The machine is shared and its speed drifts, so every repeat runs every
(implementation, P, learn/act) block back to back, in a fresh shuffled order, and the medians over
repeats are reported (with per-repeat ratios to ``fast`` and the least disturbed repeat).
The agent's target-network sync is replaced by a no-op (it is not part of what is compared).

    python benchmarks/learner_paths.py                      # about 3 minutes (2.5 with inductor's cache warm)
    python benchmarks/learner_paths.py --repeats 3 --learn-iters 100 --act-iters 500 --no-compile
"""

from __future__ import annotations

import argparse
import copy
import random
import statistics
import time

import numpy as np
import torch
import torch.nn.functional as F
from threadpoolctl import threadpool_limits
from torch import nn
from torch.func import functional_call, grad, stack_module_state, vmap

from rlzoo.agents.dqn import DQNAgent
from rlzoo.nets import MLP, ObservationEncoder, QHead, QNetwork, member_generators
from rlzoo.replay import Batch
from rlzoo.targets import dqn_target

OBS, ACTIONS, HIDDEN, BATCH = 4, 2, (120, 84), 128
GAMMA, LR, MAX_NORM = 0.99, 2.5e-4, 10.0
POPULATIONS = (1, 10)


def no_sync(online, target, updates) -> bool:
    return False


def make_batch(P: int, seed: int = 123) -> Batch:
    g = torch.Generator().manual_seed(seed + P)
    return Batch(obs=torch.randn(P, BATCH, OBS, generator=g),
                 action=torch.randint(0, ACTIONS, (P, BATCH), generator=g),
                 reward=torch.ones(P, BATCH),
                 next_obs=torch.randn(P, BATCH, OBS, generator=g),
                 terminated=(torch.rand(P, BATCH, generator=g) < 0.05).float())


def make_act_obs(P: int, seed: int = 7) -> np.ndarray:
    return np.random.default_rng(seed + P).standard_normal((P, OBS)).astype(np.float32)


def rlzoo_qnet(P: int) -> QNetwork:
    gens = member_generators(range(P))
    return QNetwork(ObservationEncoder((OBS,)), MLP((OBS,), gens, hidden_sizes=HIDDEN),
                    QHead(HIDDEN[-1], ACTIONS, gens))


# ---------------------------------------------------------------------------------------------- rlzoo agent

class AgentImpl:
    """rlzoo's DQNAgent, fast path on or off."""

    def __init__(self, P: int, fast_path: bool):
        q_net = rlzoo_qnet(P)
        opt = torch.optim.Adam(q_net.parameters(), lr=LR, fused=True)
        self.agent = DQNAgent(q_net, opt, dqn_target, target_sync=no_sync, gamma=GAMMA, loss="huber",
                              max_grad_norm=MAX_NORM, fast_path=fast_path)
        if fast_path:
            assert self.agent.fast is not None, "the numpy fast path did not engage"

    def learn(self, batch: Batch):
        metrics, _ = self.agent.learn(batch)
        return metrics["loss"], metrics["grad_norm"]

    def act(self, obs: np.ndarray) -> np.ndarray:
        return self.agent.q_values(obs)


class CompiledAutogradImpl:
    """(b)'s loss (online and target forwards, DQN target, Huber) under torch.compile; backward, per-member
    clipping and the fused Adam step eager, as in DQNAgent._gradients."""

    def __init__(self, P: int):
        from rlzoo.agents.dqn import clip_grad_norm_per_member
        self.clip = clip_grad_norm_per_member
        self.q_net = rlzoo_qnet(P)
        self.target_net = copy.deepcopy(self.q_net).requires_grad_(False)
        self.opt = torch.optim.Adam(self.q_net.parameters(), lr=LR, fused=True)
        q_net, target_net = self.q_net, self.target_net

        def member_loss(obs, action, reward, next_obs, terminated):
            q_sa = q_net(obs).gather(-1, action.unsqueeze(-1)).squeeze(-1)
            with torch.no_grad():
                y = dqn_target(reward, terminated, GAMMA, target_net(next_obs))
            return F.smooth_l1_loss(q_sa, y, reduction="none").mean(dim=1)

        self.loss = torch.compile(member_loss, dynamic=False)

    def learn(self, batch: Batch):
        self.opt.zero_grad(set_to_none=True)
        loss = self.loss(batch.obs, batch.action, batch.reward, batch.next_obs, batch.terminated)
        loss.sum().backward()
        norms = self.clip([p.grad for p in self.q_net.parameters()], MAX_NORM)
        self.opt.step()
        return loss.detach(), norms

    def act(self, obs: np.ndarray) -> np.ndarray:  # not compiled: the eager module, as in (b)
        with torch.inference_mode():
            return self.q_net(torch.as_tensor(obs).unsqueeze(1))[:, 0].numpy()


# ---------------------------------------------------------------------------------------------- torch.func

def plain_member() -> nn.Sequential:
    return nn.Sequential(nn.Linear(OBS, HIDDEN[0]), nn.ReLU(), nn.Linear(HIDDEN[0], HIDDEN[1]), nn.ReLU(),
                         nn.Linear(HIDDEN[1], ACTIONS))


class FuncImpl:
    """A network written once for one member; the population is vmap over stacked parameters."""

    def __init__(self, P: int, compile_: bool = False):
        # Same initial weights as rlzoo's PopLinear members (so the losses can be compared).
        reference = rlzoo_qnet(P)
        pop_layers = list(reference.torso.layers) + [reference.head.q]
        members = []
        for i in range(P):
            m = plain_member()
            with torch.no_grad():
                for lin, pop in zip([m[0], m[2], m[4]], pop_layers):
                    lin.weight.copy_(pop.weight[i])
                    lin.bias.copy_(pop.bias[i, 0])
            members.append(m)
        params, _ = stack_module_state(members)  # {name: [P, ...]}
        self.params = {k: v.detach().clone() for k, v in params.items()}  # leaves; grads come from torch.func
        self.target_params = {k: v.clone() for k, v in self.params.items()}
        self.names = list(self.params)
        self.opt = torch.optim.Adam(list(self.params.values()), lr=LR, fused=True)
        base = copy.deepcopy(members[0]).to("meta")  # the skeleton functional_call runs

        def member_loss(p, tp, obs, action, reward, next_obs, terminated):  # one member, [B, ...]
            q_sa = functional_call(base, p, (obs,)).gather(-1, action.unsqueeze(-1)).squeeze(-1)
            y = dqn_target(reward, terminated, GAMMA, functional_call(base, tp, (next_obs,)))
            loss = F.smooth_l1_loss(q_sa, y.detach())
            return loss, loss.detach()  # (what grad differentiates, the value to report)

        def member_step(p, tp, obs, action, reward, next_obs, terminated):  # one member: grads clipped
            g, loss = grad(member_loss, has_aux=True)(p, tp, obs, action, reward, next_obs, terminated)
            norm = torch.sqrt(sum((x * x).sum() for x in g.values()))
            coef = (MAX_NORM / (norm + 1e-6)).clamp(max=1.0)
            return {k: x * coef for k, x in g.items()}, loss, norm

        def q_values(p, obs):  # one member, [1, obs] -> [1, A]
            return functional_call(base, p, (obs,))

        self.step_fn = vmap(member_step)
        self.act_fn = vmap(q_values)
        self.compile_s = None
        if compile_:
            self.step_fn = torch.compile(self.step_fn, dynamic=False)
            self.act_fn = torch.compile(self.act_fn, dynamic=False)

    def warm_compile(self, batch: Batch, obs: np.ndarray) -> float:
        """Compile (two first calls of both functions; the step returns gradients, the parameters are untouched)."""
        t0 = time.perf_counter()
        for _ in range(2):
            self.step_fn(self.params, self.target_params, batch.obs, batch.action, batch.reward, batch.next_obs,
                         batch.terminated)
            self.act(obs)
        self.compile_s = time.perf_counter() - t0
        return self.compile_s

    def learn(self, batch: Batch):
        grads, loss, norms = self.step_fn(self.params, self.target_params, batch.obs, batch.action, batch.reward,
                                          batch.next_obs, batch.terminated)
        for k in self.names:
            self.params[k].grad = grads[k]
        self.opt.step()
        return loss, norms

    def act(self, obs: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return self.act_fn(self.params, torch.as_tensor(obs).unsqueeze(1))[:, 0].numpy()


# ---------------------------------------------------------------------------------------------- harness

def timed(fn, arg, iters: int) -> float:
    """Mean microseconds per call over ``iters`` back-to-back calls (one block)."""
    t0 = time.perf_counter()
    for _ in range(iters):
        fn(arg)
    return (time.perf_counter() - t0) / iters * 1e6


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = torch.as_tensor(a).double(), torch.as_tensor(b).double()
    return float(((a - b).abs() / b.abs().clamp_min(1e-12)).max())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--learn-iters", type=int, default=150)
    ap.add_argument("--act-iters", type=int, default=1000)
    ap.add_argument("--no-compile", action="store_true", help="skip the torch.compile lines")
    ap.add_argument("--compile-limit", type=float, default=120.0, help="seconds; slower compiles are dropped")
    args = ap.parse_args()

    torch.set_num_threads(1)
    with threadpool_limits(1):
        run(args)


def run(args) -> None:
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, CartPole shapes: obs {OBS}, "
          f"{ACTIONS} actions, MLP {HIDDEN}, batch {BATCH}, float32")
    names = ["fast", "autograd", "func"] + ([] if args.no_compile else ["func+comp", "auto+comp"])
    impls: dict[tuple[str, int], object] = {}
    batches = {P: make_batch(P) for P in POPULATIONS}
    act_obs = {P: make_act_obs(P) for P in POPULATIONS}
    notes: dict[str, str] = {}
    if "func+comp" in names:
        import os
        from torch._inductor.runtime.cache_dir_utils import cache_dir
        warm = os.path.isdir(cache_dir()) and bool(os.listdir(cache_dir()))
        print(f"inductor's on-disk cache {cache_dir()}: "
              + ("present (compile times below are warm)" if warm else "empty (cold compile)"))

    for P in POPULATIONS:
        impls["fast", P] = AgentImpl(P, fast_path=True)
        impls["autograd", P] = AgentImpl(P, fast_path=False)
        impls["func", P] = FuncImpl(P)
        if "func+comp" in names:
            try:
                impl = FuncImpl(P, compile_=True)
                s = impl.warm_compile(batches[P], act_obs[P])
                print(f"torch.compile of the torch.func learner step + acting, P={P}: {s:.1f} s")
                if s > args.compile_limit:
                    notes["func+comp"] = f"compile took {s:.0f} s > {args.compile_limit:.0f} s"
                else:
                    impls["func+comp", P] = impl
            except Exception as e:  # report, do not abort the benchmark
                notes["func+comp"] = f"compile failed: {type(e).__name__}: {str(e).splitlines()[0][:200]}"
        if "auto+comp" in names:
            try:
                impl = CompiledAutogradImpl(P)
                t0 = time.perf_counter()
                impl.loss(*(getattr(batches[P], f) for f in ("obs", "action", "reward", "next_obs", "terminated")))
                impl.loss(*(getattr(batches[P], f) for f in ("obs", "action", "reward", "next_obs", "terminated")))
                s = time.perf_counter() - t0
                print(f"torch.compile of the autograd loss function, P={P}: {s:.1f} s")
                if s > args.compile_limit:
                    notes["auto+comp"] = f"compile took {s:.0f} s > {args.compile_limit:.0f} s"
                else:
                    impls["auto+comp", P] = impl
            except Exception as e:
                notes["auto+comp"] = f"compile failed: {type(e).__name__}: {str(e).splitlines()[0][:200]}"
    for name, note in notes.items():
        print(f"{name}: {note}")
    names = [n for n in names if all((n, P) in impls for P in POPULATIONS)]

    # Same numbers: per-member loss and pre-clip gradient norm of the first step, and acting Q-values.
    print("\ncheck against autograd on the same batch (max relative difference; must be < 1e-4):")
    ref_q = {P: impls["autograd", P].act(act_obs[P]) for P in POPULATIONS}  # acting first: initial weights
    ref = {P: impls["autograd", P].learn(batches[P]) for P in POPULATIONS}
    ok = True
    for name in names:
        if name == "autograd":
            continue
        for P in POPULATIONS:
            impl = impls[name, P]
            q = impl.act(act_obs[P])
            loss, norms = impl.learn(batches[P])
            d_loss, d_norm = rel(loss, ref[P][0]), rel(norms, ref[P][1])
            d_q = rel(torch.from_numpy(np.asarray(q)), torch.from_numpy(ref_q[P]))
            good = max(d_loss, d_norm, d_q) < 1e-4
            ok &= good
            print(f"  {name:10s} P={P:2d}: loss {d_loss:.1e}  grad norm {d_norm:.1e}  act Q {d_q:.1e}  "
                  f"{'ok' if good else 'MISMATCH'}   (loss member 0: {float(loss[0]):.6f})")
    if not ok:
        raise SystemExit("an implementation does not compute the same numbers as autograd")

    # Warm-up, then interleaved timing.
    blocks = [(n, P, kind) for n in names for P in POPULATIONS for kind in ("learn", "act")]
    for n, P, kind in blocks:
        impl = impls[n, P]
        (timed(impl.learn, batches[P], 20) if kind == "learn" else timed(impl.act, act_obs[P], 200))
    results: dict[tuple, list[float]] = {b: [] for b in blocks}
    rng = random.Random(0)
    t_start = time.perf_counter()
    for r in range(args.repeats):
        order = blocks[:]
        rng.shuffle(order)  # a fresh interleaved order each repeat: drift spreads over all blocks
        for n, P, kind in order:
            impl = impls[n, P]
            if kind == "learn":
                results[n, P, kind].append(timed(impl.learn, batches[P], args.learn_iters))
            else:
                results[n, P, kind].append(timed(impl.act, act_obs[P], args.act_iters))
        print(f"repeat {r + 1}/{args.repeats} done ({time.perf_counter() - t_start:.0f} s)")

    med = {b: statistics.median(v) for b, v in results.items()}
    cols = [(P, kind) for kind in ("learn", "act") for P in POPULATIONS]
    print(f"\nmedian microseconds per call over {args.repeats} interleaved repeats "
          f"({args.learn_iters} learner steps / {args.act_iters} acting calls per block), one thread:")
    header = "| implementation | " + " | ".join(f"{k} P={P}" for P, k in cols) + " | loop step P=1 | loop step P=10 |"
    print(header)
    print("|" + "---|" * (len(cols) + 3))
    for n in names:
        loop = [med[n, P, "act"] + med[n, P, "learn"] / 10 for P in POPULATIONS]
        print(f"| {n} | " + " | ".join(f"{med[n, P, k]:,.0f}" for P, k in cols)
              + " | " + " | ".join(f"{x:,.0f}" for x in loop) + " |")
    print("\nloop step = act + learn / 10 (CartPole reference: one update every 10 environment steps); "
          "environment, replay and logging not included.")
    print("\nper-repeat ratio to fast (median over repeats, same repeat's fast block):")
    for n in names:
        if n == "fast":
            continue
        parts = []
        for P, k in cols:
            ratios = [a / b for a, b in zip(results[n, P, k], results["fast", P, k])]
            parts.append(f"{k} P={P}: {statistics.median(ratios):.2f}x")
        print(f"  {n:10s} " + "  ".join(parts))
    print("\nleast disturbed repeat (minimum over repeats), microseconds per call:")
    for n in names:
        print(f"  {n:10s} " + "  ".join(f"{k} P={P}: {min(results[n, P, k]):,.0f}" for P, k in cols))
    for name, note in notes.items():
        print(f"{name}: {note}")


if __name__ == "__main__":
    main()
