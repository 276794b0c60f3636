"""Learner updates split across processes by member, on the CPU (``learner_workers``).

The members of a population learn independently, so one update of ``P`` members is ``K`` updates of
member shards. ``ShardedLearner`` puts the networks' parameters and the optimizer's state in shared
memory, forks ``K - 1`` worker processes, and at every update hands each worker its members' rows of
the sampled batch while this process updates the first shard: each process writes only its members'
slices of the shared parameters and optimizer state. Acting, environments, replay, target sync, CSVs and
checkpoints stay in this process and see the shared memory, so a run is the same run as with one
process (each member's arithmetic is the same; tests/test_parallel.py), only its updates are split over
cores. A core busy with Python and elementwise work is the bottleneck of a small-network population;
worker processes do not share its interpreter lock, as threads would.
"""

from __future__ import annotations

import copy
import multiprocessing
import signal
import traceback

import numpy as np
import torch
from torch import nn

from rlzoo.errors import ConfigError
from rlzoo.optim import Adam
from rlzoo.replay import Batch

METRIC_KEYS = ("loss", "q_mean", "grad_norm")


def shard_bounds(population: int, shards: int) -> list[tuple[int, int]]:
    """``shards`` contiguous member ranges ``[a, b)`` covering ``range(population)``, sizes differing by at most one."""
    parts = np.array_split(np.arange(population), shards)
    return [(int(p[0]), int(p[-1]) + 1) for p in parts if len(p)]


def member_slice(module: nn.Module, a: int, b: int) -> nn.Module:
    """A copy of a population module (every parameter has the member axis first) over members ``[a, b)``,
    whose parameters are views of ``module``'s: a write through either is seen by the other."""
    memo = {id(p): nn.Parameter(p.data[a:b], requires_grad=p.requires_grad) for p in module.parameters()}
    shard = copy.deepcopy(module, memo)
    for m in shard.modules():
        if hasattr(m, "population"):
            m.population = b - a
    return shard


def _optimizer_slice(opt: Adam, full_params, shard_params, a: int, b: int) -> Adam:
    """An optimizer over ``shard_params`` whose per-parameter state tensors are the ``[a, b)`` slices of
    ``opt``'s; other state (the step count) is the same object."""
    shard = Adam(shard_params, **{k: opt.defaults[k] for k in ("lr", "betas", "eps")})
    for group, full_group in zip(shard.param_groups, opt.param_groups):
        group.update({k: v for k, v in full_group.items() if k != "params"})
    for pf, ps in zip(full_params, shard_params):
        shard.state[ps] = {k: v[a:b] if torch.is_tensor(v) and v.shape == pf.shape else v
                           for k, v in opt.state[pf].items()}
    return shard


def _worker(conn, inherited, agent, batch: Batch, metrics: dict, a: int, b: int) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles signals and stops its workers
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    for other in inherited:  # the parent's ends of the pipes, copied by fork: closed, so that the parent's
        other.close()  # exit (even SIGKILL) reaches this worker as end-of-file
    mine = Batch(*(x[a:b] for x in batch))
    while True:
        try:
            message = conn.recv_bytes()
        except (EOFError, OSError):  # the parent is gone
            break
        if message != b"update":
            break
        try:
            for key, value in agent.update(mine).items():
                metrics[key][a:b] = value
            conn.send_bytes(b"ok")
        except BaseException:  # report, keep serving: the parent decides
            conn.send_bytes(traceback.format_exc().encode())
    conn.close()


class ShardedLearner:
    """Wraps a ``DQNAgent`` with population ``P``: acts like it, and runs each ``update`` as ``workers``
    member shards in parallel processes. ``close()`` stops the workers."""

    def __init__(self, agent, workers: int):
        P = next(agent.q_net.parameters()).shape[0]  # every parameter has the member axis first
        if not isinstance(agent.optimizer, Adam):
            raise ConfigError(f"learner_workers > 1 needs optimizer=adam (rlzoo.optim.Adam), "
                              f"got {type(agent.optimizer).__module__}.{type(agent.optimizer).__name__}")
        if "fork" not in multiprocessing.get_all_start_methods():
            raise ConfigError("learner_workers > 1 forks worker processes, which this platform cannot: use learner_workers=1")
        if agent.device.type != "cpu":
            raise ConfigError("learner_workers > 1 splits updates over CPU cores: use device=cpu or learner_workers=1")
        self.agent, self.population = agent, int(P)
        self.bounds = shard_bounds(self.population, workers)
        self._procs, self._conns, self._shards = [], [], None
        self._batch = None
        self._metrics = None

    # The loop's view of an agent.
    @property
    def updates(self) -> int:
        return self.agent.updates

    @property
    def online(self) -> nn.Module:
        return self.agent.online

    @property
    def target(self) -> nn.Module:
        return self.agent.target

    def q_values(self, obs: np.ndarray) -> np.ndarray:
        return self.agent.q_values(obs)

    def state_dict(self) -> dict:
        return self.agent.state_dict()

    def _shard_agent(self, a: int, b: int):
        full = self.agent
        shard = copy.copy(full)
        shard.q_net, shard.target_net = member_slice(full.q_net, a, b), member_slice(full.target_net, a, b)
        shard.optimizer = _optimizer_slice(full.optimizer, list(full.q_net.parameters()),
                                           list(shard.q_net.parameters()), a, b)
        return shard

    def _start(self, batch: Batch) -> None:
        """Move the learner's state to shared memory and fork the workers (at the first update, when a
        resumed run has loaded its state)."""
        full = self.agent
        full.optimizer._lists = full.optimizer._prepare()  # create the state now, so that it can be shared
        for tensor in [*full.q_net.parameters(), *full.target_net.parameters(),
                       *(v for s in full.optimizer.state.values() for v in s.values()
                         if torch.is_tensor(v) and v.dim() > 0)]:
            tensor.share_memory_()  # PopLinear's cached numpy views see the new memory address and rebuild
        self._batch = Batch(*(torch.empty_like(x).share_memory_() for x in batch))
        P = self.population
        self._metrics = {k: torch.zeros(P, dtype=torch.float32).share_memory_() for k in METRIC_KEYS}
        self._shards = [self._shard_agent(a, b) for a, b in self.bounds]
        ctx = multiprocessing.get_context("fork")  # the workers inherit the shard agents; nothing is pickled
        for shard, (a, b) in zip(self._shards[1:], self.bounds[1:]):
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=_worker, args=(child, [*self._conns, parent], shard, self._batch, self._metrics, a, b),
                               name=f"rlzoo-learner-{a}-{b}", daemon=True)
            proc.start()
            child.close()
            self._procs.append(proc)
            self._conns.append(parent)

    def update(self, batch: Batch) -> dict[str, torch.Tensor]:
        if self._shards is None:
            self._start(batch)
        for shared, x in zip(self._batch, batch):
            shared.copy_(x)
        for conn in self._conns:
            conn.send_bytes(b"update")
        a, b = self.bounds[0]
        mine = self._shards[0].update(Batch(*(x[a:b] for x in self._batch)))
        for key, value in mine.items():
            self._metrics[key][a:b] = value
        failures = []
        for conn, proc in zip(self._conns, self._procs):
            try:
                reply = conn.recv_bytes()
            except (EOFError, OSError):
                reply = f"learner worker {proc.name} exited (code {proc.exitcode})".encode()
            if reply != b"ok":
                failures.append(reply.decode())
        if failures:
            raise RuntimeError("a learner worker failed:\n" + "\n".join(failures))
        self.agent.updates += 1
        return {k: self._metrics[k].clone() for k in mine}

    def close(self) -> None:
        for conn in self._conns:
            try:
                conn.send_bytes(b"stop")
            except OSError:
                pass
            conn.close()
        for proc in self._procs:
            proc.join(timeout=5)
            if proc.is_alive():
                proc.kill()
        self._procs, self._conns, self._shards = [], [], None  # a later update starts new workers
