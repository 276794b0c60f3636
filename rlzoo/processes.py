"""A population's members split over processes, each running the whole training loop (``processes=K``).

The members of a population are independent, so a run of ``P`` members is ``K`` runs of contiguous member
shards. This process forks ``K`` workers; worker ``k`` builds the environments, agent and replay memory of its
members (seeds ``seed + lo .. seed + hi - 1``, exactly as in a one-process run) and trains them with the same
loop, on its own core. The workers send their CSV rows through pipes to this process (in batches, each row
within a quarter of a second), which alone writes ``returns.csv`` and ``metrics.csv`` and draws the progress
line.

Checkpoints: each worker writes ``checkpoint.shard<k>.pt`` at its own step, after this process confirms that
it has written all of the worker's rows so far; the checkpoint counts them. On resume the rows of each seed
past its shard's checkpoint are dropped (and written again), after checking that the counted rows are there.
SIGINT and SIGTERM reach this process (the workers ignore SIGINT, so that Ctrl-C in a terminal goes through
here): it asks every worker to checkpoint and stop with SIGTERM. A second signal stops everything at once.
"""

from __future__ import annotations

import json
import logging
import math
import multiprocessing
import os
import pickle
import signal
import sys
import time
import traceback
from collections import Counter
from multiprocessing.connection import wait
from pathlib import Path

from omegaconf import DictConfig, OmegaConf, open_dict

from rlzoo import checkpoint, loop
from rlzoo.checkpoint import CheckpointError, shard_filename
from rlzoo.errors import ConfigError
from rlzoo.parallel import shard_bounds
from rlzoo.progress import Progress
from rlzoo.results import TABLES, open_table
from rlzoo.seeding import member_seeds

log = logging.getLogger("rlzoo")
ROWS, SYNC, PROGRESS, DONE, ERROR = range(5)


def resume_hint(overrides, out_dir) -> str:
    kept = " ".join(o for o in overrides if not o.startswith(("hydra.run.dir=", "resume=")))
    return f"python -m rlzoo {kept + ' ' if kept else ''}hydra.run.dir={out_dir} resume=true"


# -- resuming ----------------------------------------------------------------------------------------------
def prepare(out_dir: Path, resume: bool, config: dict, shards: int) -> list[dict] | None:
    """Check the run directory before anything is written to it. For ``resume``: per shard, its step, seeds
    and counted rows (the checkpoints are read and checked here, and read again by their workers)."""
    if not resume or (out_dir / checkpoint.FILENAME).exists():
        return checkpoint.prepare(out_dir, resume, config)  # a new run, or one trained in one process: refused
    found = {}  # each checkpoint is read once here; the first checked refuses another processes=<K>
    for path in sorted(out_dir.glob(checkpoint.SHARD_GLOB)):
        payload = checkpoint.read(path)
        meta = json.loads(payload["meta"])
        checkpoint.check_config(meta, out_dir, config)
        found[path.name] = {"step": int(payload["step"]), "seeds": [int(s) for s in meta["seeds"]],
                            "rows": meta["csv"]["rows"]}
        del payload
    if not found:
        raise CheckpointError(f"resume=true but {out_dir} has no checkpoint (checkpoint_every=0, or the run stopped "
                              "before its first checkpoint): start a new run instead")
    names = [shard_filename(k) for k in range(shards)]
    missing = [name for name in names if name not in found]
    if missing:
        raise CheckpointError(f"resume=true but {out_dir} lacks {', '.join(missing)} of its {shards} processes' "
                              "checkpoints: the files were removed; start a new run instead")
    return [found[name] for name in names]


def cut_rows(out_dir: Path, shards: list[dict]) -> int:
    """Check that each shard's counted rows are in the CSVs, then drop each seed's rows past its shard's
    checkpoint (written again on resume). Returns the number of rows dropped."""
    step_of = {s: sh["step"] for sh in shards for s in sh["seeds"]}
    tables = checkpoint.seed_steps(out_dir)
    for name, _ in TABLES.values():
        keys = tables.get(name, ([], []))[1]
        counts = Counter(seed for seed, step in keys if seed in step_of and step <= step_of[seed])
        for sh in shards:
            have, counted = sum(counts.get(s, 0) for s in sh["seeds"]), sh["rows"].get(name, 0)
            if have != counted:
                raise CheckpointError(
                    f"{out_dir / name} has {have} rows of seeds {sh['seeds'][0]}..{sh['seeds'][-1]} up to step "
                    f"{sh['step']}, but {counted} were written before their checkpoint: the file was truncated, "
                    "replaced or edited; restore it or start a new run in another directory")
    return checkpoint.cut_csvs_per_seed(out_dir, step_of, tables)


# -- a worker ----------------------------------------------------------------------------------------------
class _Outbox:
    """A worker's rows and progress, sent to the parent in batches: one message per row would wake the parent
    thousands of times a second, and on a machine whose cores all train, each wake-up takes a worker's core.
    Rows wait at most ``max_wait`` seconds (checked at each row and at every progress call, every 100 steps),
    and are always sent before a checkpoint and when the worker ends."""

    def __init__(self, conn, shard: int, max_wait: float = 0.25, max_rows: int = 500, progress_every: float = 0.5):
        self.conn, self.shard, self.max_wait, self.max_rows, self.progress_every = conn, shard, max_wait, max_rows, progress_every
        self.rows, self.since, self._shown = [], 0.0, -math.inf
        self.counts = {name: 0 for name, _ in TABLES.values()}  # rows sent, per CSV

    def row(self, kind: str, row: dict) -> None:
        self.counts[TABLES[kind][0]] += 1
        if not self.rows:
            self.since = time.perf_counter()
        self.rows.append((kind, row))
        if len(self.rows) >= self.max_rows or time.perf_counter() - self.since >= self.max_wait:
            self.flush()

    def flush(self) -> None:
        if self.rows:
            self.conn.send((ROWS, self.rows))
            self.rows = []

    def update(self, step: int, sps: float, recent, force: bool = False) -> None:
        """The loop's progress calls."""
        now = time.perf_counter()
        if self.rows and now - self.since >= self.max_wait:
            self.flush()
        if force or now - self._shown >= self.progress_every:
            self._shown = now
            self.conn.send((PROGRESS, self.shard, step, float(sps), list(recent)))


def _worker(k: int, lo: int, hi: int, cfg: DictConfig, out_dir: Path, agent_name: str, overrides, config: dict,
            conn, inherited, resume: bool, start) -> None:
    from rlzoo.train import build, run_loop

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the parent, which forwards it as SIGTERM
    early = []  # a SIGTERM before the loop's handler is installed: stop after the first step
    signal.signal(signal.SIGTERM, lambda signum, frame: early.append(signum))
    for other in inherited:  # the parent's ends of the pipes, copied by fork: closed, so that the parent's
        other.close()  # exit (even SIGKILL) reaches this worker as a broken pipe
    outbox = _Outbox(conn, k)

    def positions() -> dict:  # at a checkpoint: wait until the parent has written every row so far
        outbox.flush()
        conn.send((SYNC, k))
        conn.recv()
        return {"rows": dict(outbox.counts)}

    parts = None
    try:
        sub = cfg.copy()
        with open_dict(sub):
            sub.seed, sub.n_seeds = int(cfg.seed) + lo, hi - lo
        parts = build(sub, out_dir, agent_name, sink=outbox.row)
        ckpt = checkpoint.Checkpointer(out_dir, cfg.checkpoint_every, parts, config, overrides,
                                       filename=shard_filename(k), positions=positions)
        state = None
        if resume:
            state, meta = checkpoint.restore(parts, checkpoint.read(out_dir / shard_filename(k)), out_dir,
                                             loop.LoopState, cut_csvs=False)
            outbox.counts.update(meta["csv"]["rows"])
        with ckpt.signals(which=(signal.SIGTERM,)):
            if early:
                ckpt.request_stop(early[0])
            start.wait()  # every process has built its run: the loops start together
            began = time.monotonic()  # the system's clock, the same in every process
            state = run_loop(sub, parts, parts["agent"], ckpt, state, outbox)
            ended = time.monotonic()
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # the final checkpoint is written in any case
        if not ckpt.stop_requested and ckpt.every and ckpt.saved_step != state.step:
            ckpt.save(state)
        outbox.flush()
        conn.send((DONE, k, state.step, ckpt.signum, ckpt.bytes, began, ended))
    except (BrokenPipeError, EOFError):  # the parent is gone
        pass
    except SystemExit:  # a second signal: stop at once
        raise
    except BaseException as e:
        try:
            exc = pickle.dumps(e)
        except Exception:
            exc = None
        try:
            outbox.flush()  # the rows logged before the error are valid
            conn.send((ERROR, k, exc, traceback.format_exc()))
        except OSError:
            pass
    finally:
        if parts is not None:
            parts["envs"].close()
            parts["eval_envs"].close()
        conn.close()


# -- the parent --------------------------------------------------------------------------------------------
def _raise_worker_error(k: int, bounds, seeds, exc: bytes | None, text: str):
    lo, hi = bounds[k]
    where = f"the process training seeds {seeds[lo]}..{seeds[hi - 1]}"
    e = None
    if exc is not None:
        try:
            e = pickle.loads(exc)
        except Exception:
            e = None
    if isinstance(e, ConfigError):
        raise type(e)(str(e))
    if isinstance(e, BaseException):
        e.add_note(f"in {where}:\n{text}")
        raise e
    raise RuntimeError(f"{where} failed:\n{text}")


def train_in_processes(cfg: DictConfig, out_dir, agent_name: str, show: bool, overrides, shards: int) -> dict:
    """``train`` for ``processes=shards > 1``: see the module docstring. Returns the seeds, each process's
    member range ``bounds`` and final ``steps``, and ``loop_seconds``: from the first training loop's start to
    the last one's end."""
    if "fork" not in multiprocessing.get_all_start_methods():
        raise ConfigError("processes > 1 forks worker processes, which this platform cannot: use processes=1")
    out_dir = Path(out_dir)
    config = OmegaConf.to_container(cfg, resolve=True)
    P = int(cfg.n_seeds)
    bounds, seeds = shard_bounds(P, shards), member_seeds(cfg.seed, P)
    resumed = prepare(out_dir, bool(cfg.resume), config, len(bounds))
    if resumed:
        dropped = cut_rows(out_dir, resumed)
        log.info("resuming %s at steps %s of %d (%d CSV rows past the checkpoints dropped, to be written again)",
                 out_dir, [sh["step"] for sh in resumed], cfg.total_steps, dropped)
    log.info("training %s: %d members (seeds %s) in %d processes %s, %d steps each -> %s", agent_name, P, seeds,
             len(bounds), [seeds[lo:hi] for lo, hi in bounds], cfg.total_steps, out_dir)
    writers = {}  # opened at their first row: a run that fails while building leaves no CSV behind
    progress = Progress(cfg.total_steps, enabled=show)
    ctx = multiprocessing.get_context("fork")
    start = ctx.Barrier(len(bounds))
    procs, conns = [], []
    previous, finished = {}, False
    stop = {"signum": None}

    def forward(signum, frame):
        if stop["signum"] is not None:
            print(f"rlzoo: stopped at once by a second {signal.Signals(signum).name}; each process's last "
                  "checkpoint is intact", file=sys.stderr)
            raise SystemExit(128 + signum)
        stop["signum"] = signum
        for p in procs:
            if p.is_alive():
                os.kill(p.pid, signal.SIGTERM)

    try:
        for k, (lo, hi) in enumerate(bounds):
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=_worker, name=f"rlzoo-seeds-{seeds[lo]}-{seeds[hi - 1]}", daemon=True,
                               args=(k, lo, hi, cfg, out_dir, agent_name, list(overrides), config, child,
                                     [*conns, parent], bool(resumed), start))
            proc.start()
            child.close()
            procs.append(proc)
            conns.append(parent)
        try:
            for sig in (signal.SIGINT, signal.SIGTERM):
                previous[sig] = signal.signal(sig, forward)
        except ValueError:  # not the main thread: leave signals alone
            pass
        steps = [sh["step"] for sh in resumed] if resumed else [0] * len(bounds)
        sps, recent = [0.0] * len(bounds), [None] * P
        done = {}
        live = {conn: k for k, conn in enumerate(conns)}
        while live:
            for conn in wait(list(live)):
                k = live[conn]
                try:
                    message = conn.recv()
                except (EOFError, OSError):
                    del live[conn]
                    if k not in done:
                        procs[k].join(timeout=5)
                        _raise_worker_error(k, bounds, seeds, None, f"it exited (code {procs[k].exitcode}) "
                                            "without finishing")
                    continue
                tag = message[0]
                if tag == ROWS:
                    for kind, row in message[1]:
                        if kind not in writers:
                            writers[kind] = open_table(out_dir, kind)
                        writers[kind].write(row, flush=False)
                    for writer in writers.values():
                        writer.flush()
                elif tag == PROGRESS:
                    lo, hi = bounds[k]
                    steps[k], sps[k], recent[lo:hi] = message[2], message[3], message[4]
                    progress.update(min(steps), sum(sps) / len(sps), recent)
                elif tag == SYNC:
                    conn.send(True)
                elif tag == DONE:
                    done[k] = message
                    steps[k] = message[2]
                    if message[3] is not None and stop["signum"] is None:  # a worker was signalled directly
                        forward(message[3], None)
                elif tag == ERROR:
                    _raise_worker_error(k, bounds, seeds, message[2], message[3])
        finished = True  # every worker reported and closed its pipe
        progress.update(min(steps), sum(sps) / len(sps), recent, force=True)
        progress.close()
        signum = stop["signum"]
        if signum is not None:
            saved = sum(d[4] for d in done.values())
            raise checkpoint.RunStopped(
                f"stopped by {signal.Signals(signum).name} at steps {[d[2] for _, d in sorted(done.items())]} of "
                f"{cfg.total_steps} ({len(bounds)} processes): checkpoints written to "
                f"{out_dir / checkpoint.SHARD_GLOB} ({saved / 1e6:.1f} MB), CSVs flushed; continue with: "
                f"{resume_hint(overrides, out_dir)}", signum)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        for proc in procs:
            proc.join(timeout=5 if finished else 0)  # finished workers are exiting; others are stopped
            if proc.is_alive():
                proc.kill()
            proc.join()
        for conn in conns:
            conn.close()
        for writer in writers.values():
            writer.close()
    span = max(d[6] for d in done.values()) - min(d[5] for d in done.values())
    return {"seeds": seeds, "bounds": bounds, "steps": steps, "state": None, "loop_seconds": span}
