"""Hostile faults (issue 12, categories 5 and 6): a full disk, Ctrl-C during start-up, non-finite values from the
environment, a rejected config, and resume commands that must work when pasted into a shell.

A full disk is a monkeypatched writer raising ``OSError(ENOSPC)`` (in-process), and ``/dev/full`` for the real
thing. Ctrl-C during start-up is a real SIGINT to a real ``python -m rlzoo`` process, sent from inside the phase
under test (a small driver patches one function to signal its own process), so each phase is hit exactly.
"""

from __future__ import annotations

import errno
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import gymnasium
import numpy as np
import pytest

from rlzoo.errors import ConfigError
from rlzoo.guards import NonFiniteError
from rlzoo.io import checkpoint
from rlzoo.io.tables import CsvWriter
from rlzoo.train import DiskFull, resume_hint, train
from conftest import make_cfg, read_rows

RUN = ["total_steps=300", "learning_starts=100", "eval_every=0", "log_every=50", "buffer_size=500",
       "checkpoint_every=100", "progress=false"]
ODD = "runs with spaces/0_agent=dqn,seed=1"  # a sweep job's name (= and ,) under a path with a space
ENV = {**os.environ, "HYDRA_FULL_ERROR": "0", "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}


def one_rlzoo_line(err: str) -> str:
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.startswith("rlzoo:")]
    assert len(lines) == 1, err
    return lines[0]


def pasted(command: str, cwd: Path, timeout: int = 900) -> subprocess.CompletedProcess:
    """Run a printed command as a user pasting it into a POSIX shell would."""
    return subprocess.run(["/bin/sh", "-c", command], cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          env=ENV)


# -- a full disk ------------------------------------------------------------------------------------------------
def full_disk_after(monkeypatch, n_writes: int, target: str = "csv", counts=lambda writer: True):
    """The ``n_writes``-th CSV row write (or checkpoint write) fails as on a full disk; for CSVs, only the writes
    for which ``counts(writer)`` holds are counted (the others succeed)."""
    count = [0]
    if target == "csv":
        original = CsvWriter.write

        def write(self, row, flush=True):
            if not counts(self):
                return original(self, row, flush)
            count[0] += 1
            if count[0] >= n_writes:
                with self._naming_errors():
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            return original(self, row, flush)
        monkeypatch.setattr(CsvWriter, "write", write)
    else:
        original = checkpoint.torch.save

        def save(obj, f, *a, **k):
            count[0] += 1
            if count[0] >= n_writes:
                f.write(b"partial")
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            return original(obj, f, *a, **k)
        monkeypatch.setattr(checkpoint.torch, "save", save)
    return count


@pytest.mark.parametrize("n_writes,file", [(3, "returns.csv"), (3, "metrics.csv")])
def test_disk_full_on_a_csv_row_names_file_checkpoint_and_command(tmp_path, monkeypatch, n_writes, file):
    run_dir = tmp_path / ODD
    # only rows of `file` after the first checkpoint fail
    full_disk_after(monkeypatch, n_writes,
                    counts=lambda writer: writer.path.name == file and (run_dir / checkpoint.FILENAME).exists())
    with pytest.raises(DiskFull) as err:
        train(make_cfg(*RUN), run_dir, "dqn", overrides=list(RUN))
    message = str(err.value)
    step = checkpoint.read(run_dir / checkpoint.FILENAME)["step"]
    assert "\n" not in message and step in (100, 200)
    assert message.startswith(f"the disk is full (No space left on device) while writing {run_dir / file}: the last "
                              f"good checkpoint is {run_dir / checkpoint.FILENAME} (step {step}); free some space, "
                              f"then continue with: python -m rlzoo ")
    assert message.endswith(f"resume=true") and resume_hint(RUN, run_dir) in message


def test_disk_full_while_writing_a_checkpoint_keeps_the_previous_one(tmp_path, monkeypatch):
    run_dir = tmp_path / "run"
    full_disk_after(monkeypatch, 2, target="checkpoint")
    with pytest.raises(DiskFull, match=re.escape(
            f"while writing {run_dir / checkpoint.FILENAME}: the last good checkpoint is "
            f"{run_dir / checkpoint.FILENAME} (step 100); free some space, then continue with: python -m rlzoo")):
        train(make_cfg(*RUN), run_dir, "dqn", overrides=list(RUN))
    monkeypatch.undo()
    assert checkpoint.read(run_dir / checkpoint.FILENAME)["step"] == 100
    assert not (run_dir / (checkpoint.FILENAME + ".tmp")).exists()


def test_disk_full_without_a_checkpoint_says_the_run_cannot_continue(tmp_path, monkeypatch):
    full_disk_after(monkeypatch, 10)
    with pytest.raises(DiskFull) as err:
        train(make_cfg(*RUN, "checkpoint_every=0"), tmp_path / "run", "dqn")
    assert str(err.value) == (f"the disk is full (No space left on device) while writing {tmp_path / 'run' / 'metrics.csv'}"
                              f": no checkpoint was written yet (checkpoint_every=0), so the run cannot be continued: "
                              "free some space and start it again in a new directory")


def test_disk_full_before_training_leaves_no_directory(tmp_path, monkeypatch):
    full_disk_after(monkeypatch, 1)  # the first CSV header
    with pytest.raises(DiskFull, match=r"while writing .*returns\.csv, before training began \(nothing was kept\): "
                                       r"free some space and run the command again$"):
        train(make_cfg(*RUN), tmp_path / "run", "dqn")
    assert not (tmp_path / "run").exists()


def test_a_real_full_device_dev_full(tmp_path):
    """returns.csv is a link to /dev/full, which fails every write with ENOSPC."""
    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full")
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "returns.csv").symlink_to("/dev/full")
    with pytest.raises(DiskFull, match="while writing .*returns.csv, before training began"):
        train(make_cfg(*RUN), run_dir, "dqn")
    assert not run_dir.exists()  # the link and the directory this launch used are gone: the rerun can start


def test_disk_full_resume_command_works_when_pasted_and_equals_a_straight_run(tmp_path, monkeypatch):
    """The command a full disk prints, pasted into a shell after space was freed, finishes the run with the rows
    of a run that never failed; the directory's name holds a space, '=' and ','."""
    run_dir = tmp_path / ODD
    full_disk_after(monkeypatch, 25)
    overrides = [*RUN, "n_seeds=2"]
    with pytest.raises(DiskFull) as err:
        train(make_cfg(*overrides), run_dir, "dqn", overrides=overrides)
    monkeypatch.undo()
    command = str(err.value).split("then continue with: ", 1)[1]
    assert shlex.split(command)[-2:] == [f"hydra.run.dir='{run_dir}'", "resume=true"]
    done = pasted(command, tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    train(make_cfg(*overrides), tmp_path / "straight", "dqn")
    for name in ("returns.csv", "metrics.csv"):
        assert read_rows(run_dir / name) == read_rows(tmp_path / "straight" / name)


# -- the printed resume command: quoted for the shell and for Hydra ---------------------------------------------
@pytest.mark.parametrize("name", ["plain", "with space", "0_agent=dqn,seed=1", "it's", 'say "hi"', "a$b`c`", "[x]",
                                  "tab\there"])
def test_resume_hint_round_trips_through_a_shell_and_hydra(tmp_path, name):
    """What the shell passes on is an override Hydra reads back as exactly the directory."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    run_dir = tmp_path / name
    command = resume_hint(["seed=1", "agent.lr=0.1"], run_dir)
    argv = pasted(f"printf '%s\\n' {command.split(' ', 3)[3]}", tmp_path).stdout.splitlines()
    assert argv[:2] == ["seed=1", "agent.lr=0.1"] and argv[-1] == "resume=true"
    parsed = OverridesParser.create().parse_overrides([argv[-2]])[0]
    assert parsed.key_or_group == "hydra.run.dir" and parsed.value() == str(run_dir)


# -- Ctrl-C during start-up ---------------------------------------------------------------------------------------
DRIVER = textwrap.dedent("""
    import os, signal, sys
    phase = sys.argv.pop(1)
    module, name = phase.rsplit(".", 1)
    import importlib
    owner = importlib.import_module(module.split(":")[0])
    for part in module.split(":")[1:]:
        owner = getattr(owner, part)
    original = getattr(owner, name)

    def interrupted(*a, **k):
        out = original(*a, **k)
        os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C arrives while this phase ends
        return out
    setattr(owner, name, interrupted)
    from rlzoo.train import main
    sys.argv[0] = "rlzoo"
    main()
""")
PHASES = [  # where start-up is interrupted
    "rlzoo.io.checkpoint:RunDirGuard.on_run_start",  # Hydra made the directory, before its files
    "rlzoo.train.validate",  # Hydra wrote .hydra/ and train.log
    "rlzoo.train.check_memory",  # environments made
    "rlzoo.io.tables:RunLogger.__init__",  # CSV headers written
    "rlzoo.io.checkpoint:Checkpointer.__init__",  # every part built, the lock held
]


def interrupt(phase: str, run_dir: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", DRIVER, phase, *RUN, *extra, f"hydra.run.dir={run_dir}"],
                          capture_output=True, text=True, timeout=900, env=ENV)


@pytest.mark.parametrize("phase", PHASES)
def test_ctrl_c_during_start_up_exits_130_with_one_line_and_leaves_nothing(tmp_path, phase):
    run_dir = tmp_path / "run"
    proc = interrupt(phase, run_dir)
    assert proc.returncode == 130, proc.stderr[-3000:]
    line = one_rlzoo_line(proc.stderr)
    assert line.startswith("rlzoo: interrupted (Ctrl-C)") and "nothing was" in line
    assert not run_dir.exists() or not any(run_dir.iterdir()), sorted(run_dir.rglob("*"))


@pytest.mark.slow
def test_ctrl_c_during_start_up_does_not_block_the_same_command(tmp_path):
    run_dir = tmp_path / ODD
    assert interrupt("rlzoo.io.tables:RunLogger.__init__", run_dir).returncode == 130
    again = subprocess.run([sys.executable, "-m", "rlzoo", *RUN, f"hydra.run.dir={run_dir}"], capture_output=True,
                           text=True, timeout=900, env=ENV)
    assert again.returncode == 0, again.stderr[-3000:]
    assert checkpoint.read(run_dir / checkpoint.FILENAME)["step"] == 300


def test_ctrl_c_while_python_imports_torch(tmp_path):
    """``python -m rlzoo`` gets SIGINT when it starts importing torch (a sitecustomize import hook sends it)."""
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "sitecustomize.py").write_text(textwrap.dedent("""
        import os, signal, sys
        class Interrupt:
            def find_spec(self, name, path=None, target=None):
                if name == "torch":
                    sys.meta_path.remove(self)
                    os.kill(os.getpid(), signal.SIGINT)
                return None
        sys.meta_path.insert(0, Interrupt())
    """))
    env = {**ENV, "PYTHONPATH": os.pathsep.join([str(tmp_path / "site"), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-m", "rlzoo", *RUN, f"hydra.run.dir={tmp_path / 'run'}"],
                          capture_output=True, text=True, env=env, timeout=900)
    err = proc.stderr
    assert proc.returncode == 130, err[-3000:]
    assert one_rlzoo_line(err).startswith("rlzoo: interrupted (Ctrl-C)")
    assert not (tmp_path / "run").exists() or not any((tmp_path / "run").iterdir())


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("finished") / "run"
    train(make_cfg(*RUN), d, "dqn")
    return d


def test_ctrl_c_while_a_resume_starts_keeps_the_run(tmp_path, finished):
    run_dir = tmp_path / "run"
    shutil.copytree(finished, run_dir)
    before = {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file() and p.name != ".lock"}
    proc = interrupt("rlzoo.io.checkpoint:Checkpointer.__init__", run_dir, "resume=true")
    assert proc.returncode == 130 and one_rlzoo_line(proc.stderr).startswith("rlzoo: interrupted (Ctrl-C)")
    assert all(p.read_bytes() == data for p, data in before.items())


# -- a config rejected before training leaves no run directory ------------------------------------------------------
@pytest.mark.parametrize("overrides,words", [
    pytest.param(["gamma=nan"], "gamma must be a finite number, got nan", marks=pytest.mark.slow),
    (["target_sync.tau=inf"], "target_sync.tau must be a finite number, got inf"),  # refused by validate
    pytest.param(["agent=qtable", "agent.discretizer.bins=[3,3]"], "agent.discretizer.bins has 2 entries",
                 marks=pytest.mark.slow),
    (["target_sync=hard", "target_sync.every=0"], "target_sync.every must be >= 1"),  # refused while being made
])
def test_cli_rejected_config_leaves_no_run_directory(tmp_path, overrides, words):
    run_dir = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-m", "rlzoo", *RUN, *overrides, f"hydra.run.dir={run_dir}"],
                          capture_output=True, text=True, timeout=900, env=ENV)
    assert proc.returncode == 2
    assert one_rlzoo_line(proc.stderr).startswith(f"rlzoo: error: {words}")
    assert not run_dir.exists(), sorted(run_dir.rglob("*"))


@pytest.mark.parametrize("overrides", [["target_sync=hard", "target_sync.every=0"], ["env=gym", "env.id=NoSuch-v0"],
                                       ["network=nature_cnn"], ["replay=frames", "tensorboard=true"]])
def test_in_process_rejected_while_building_leaves_no_directory(tmp_path, overrides):
    with pytest.raises(ConfigError) as err:
        train(make_cfg(*RUN, *overrides), tmp_path / "run", "x")
    assert "\n" not in str(err.value)
    assert not (tmp_path / "run").exists()


def test_a_rejected_config_in_a_used_directory_keeps_the_run(tmp_path, finished):
    run_dir = tmp_path / "run"
    shutil.copytree(finished, run_dir)
    before = {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file() and p.name != ".lock"}
    with pytest.raises(checkpoint.CheckpointError):
        train(make_cfg(*RUN), run_dir, "dqn")  # no resume=true: refused
    assert all(p.read_bytes() == data for p, data in before.items())


# -- non-finite values from the environment ------------------------------------------------------------------------
class Poisoned(gymnasium.Env):
    """A 3-action, 4-dimensional environment that returns ``value`` as its reward or as observation element 2
    at its ``at``-th step after a reset with seed ``bad_seed`` (other seeds stay finite)."""

    observation_space = gymnasium.spaces.Box(-np.inf, np.inf, (4,), np.float32)
    action_space = gymnasium.spaces.Discrete(3)

    def __init__(self, where="reward", value=float("nan"), at=37, bad_seed=1):
        self.where, self.value, self.at, self.bad_seed = where, float(value), at, bad_seed
        self.t, self.poisoned = 0, False

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        if seed is not None:
            self.poisoned = seed == self.bad_seed
        self.t = 0
        return np.zeros(4, np.float32), {}

    def step(self, action):
        self.t += 1
        obs, reward = np.full(4, 0.1, np.float32), 1.0
        if self.poisoned and self.t == self.at:
            if self.where == "reward":
                reward = self.value
            else:
                obs[2] = self.value
        return obs, reward, False, self.t >= 50, {}


gymnasium.register("HostilePoisoned-v0", entry_point=Poisoned)
POISON = [("reward", "nan", "a reward of nan"), ("reward", "inf", "a reward of inf"),
          ("reward", "-inf", "a reward of -inf"), ("obs", "nan", "an observation whose element 2 is nan"),
          ("obs", "inf", "an observation whose element 2 is inf")]


@pytest.mark.parametrize("where,value,words", POISON, ids=[f"{w}={v}" for w, v, _ in POISON])
def test_non_finite_values_from_the_environment_are_named_as_such(tmp_path, where, value, words):
    # As text: a literal nan in the config would be refused before the run (tests/test_hostile_values.py).
    cfg = make_cfg(*RUN, "n_seeds=2", "env=gym", "env.id=HostilePoisoned-v0", f"+env.kwargs.where={where}",
                   f"+env.kwargs.value='{value}'")
    with pytest.raises(NonFiniteError) as err:
        train(cfg, tmp_path / "run", "x")
    assert str(err.value) == (f"the environment HostilePoisoned-v0 returned {words} to member 1 (seed 1) at step 37: "
                              "the environment produced it, not the learning; fix the environment (or its env.kwargs "
                              "/ wrapper), or set nan_check=false to store it as it is")
    assert "learning rate" not in str(err.value)


def count_tries() -> dict[str, int]:
    """Distinct hostile tries in this file, by category (docs/reliability.md quotes them)."""
    return {"faults": 2 + 1 + 1 + 1 + 1 + 1 + 8 + len(PHASES) + 1 + 1 + 1 + 1 + 2,
            "messages": 4 + 4 + 1 + len(POISON)}


# -- a sweep worker killed outright -----------------------------------------------------------------------------------
def _children(pid: int) -> list[int]:
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out


def _alive(pid: int) -> bool:
    """Running (a zombie waiting for its reaper has finished)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.slow
def test_a_killed_sweep_worker_prints_one_line_whose_command_finishes_the_sweep(tmp_path):
    sweep = tmp_path / "my sweeps"
    job = ["total_steps=3000", "learning_starts=200", "eval_every=0", "log_every=250", "checkpoint_every=500",
           "buffer_size=2000", "progress=false"]
    proc = subprocess.Popen([sys.executable, "-m", "rlzoo", "-m", "seed=0,1", "hydra/launcher=joblib",
                             "hydra.launcher.n_jobs=2", *job, f"hydra.sweep.dir={sweep}"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=ENV, cwd=tmp_path)
    try:
        deadline = time.time() + 900
        while time.time() < deadline and len(list(sweep.glob("*/" + checkpoint.FILENAME))) < 1:
            time.sleep(0.5)
        workers = [c for c in _children(proc.pid) if "LokyProcess" in Path(f"/proc/{c}/cmdline").read_text()]
        assert workers, "no joblib worker found"
        os.kill(workers[0], signal.SIGKILL)
        out, err = proc.communicate(timeout=900)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 1, err[-3000:]
    line = one_rlzoo_line(err)
    assert line.startswith("rlzoo: error: a worker process of the sweep was killed")
    command = line.split("continue the sweep with: ", 1)[1]
    assert f"hydra.sweep.dir='{sweep}'" in shlex.split(command)
    done = pasted(command, tmp_path, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert sorted(checkpoint.read(p)["step"] for p in sweep.glob("*/" + checkpoint.FILENAME)) == [3000, 3000]


# -- SIGTERM or Ctrl-C to a joblib sweep ---------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM to the sweep", "Ctrl-C (process group)"])
def test_a_stopped_joblib_sweep_checkpoints_every_job_and_leaves_no_process(tmp_path, sig):
    sweep = tmp_path / "a sweep"
    job = ["total_steps=2000", "learning_starts=200", "eval_every=0", "log_every=100", "checkpoint_every=0",
           "buffer_size=2000", "progress=false"]
    proc = subprocess.Popen([sys.executable, "-m", "rlzoo", "-m", "seed=0,1,2", "hydra/launcher=joblib",
                             "hydra.launcher.n_jobs=2", *job, f"hydra.sweep.dir={sweep}"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=ENV, cwd=tmp_path, start_new_session=True)
    try:
        deadline = time.time() + 900
        while time.time() < deadline and sum(p.read_text().count("\n") >= 3 for p in sweep.glob("*/metrics.csv")) < 2:
            time.sleep(0.5)
        children = _children(proc.pid)
        if sig == signal.SIGINT:
            os.killpg(proc.pid, sig)  # what Ctrl-C at a terminal does
        else:
            os.kill(proc.pid, sig)
        out, err = proc.communicate(timeout=900)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 128 + sig, err[-3000:]
    assert "Traceback" not in err, err[-3000:]
    lines = [line for line in err.splitlines() if line.startswith("rlzoo:")]
    assert lines[-1].startswith(f"rlzoo: sweep stopped by {sig.name}: each running job wrote a checkpoint"), err
    stopped = [line for line in lines if re.match(rf"rlzoo: job \d stopped by {sig.name} at step", line)]
    assert len(stopped) == 2, err
    steps = [checkpoint.read(p)["step"] for p in sweep.glob("*/" + checkpoint.FILENAME)]
    assert len(steps) == 2 and all(0 < s < 2000 for s in steps), steps
    deadline = time.time() + 20
    while time.time() < deadline and any(_alive(c) for c in children):
        time.sleep(0.2)
    assert not [c for c in children if _alive(c)], "processes left running"
    done = pasted(lines[-1].split("continue the sweep with: ", 1)[1], tmp_path, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    assert sorted(checkpoint.read(p)["step"] for p in sweep.glob("*/" + checkpoint.FILENAME)) == [2000] * 3


def test_the_docs_count_these_tries():
    import test_hostile_values

    doc = (Path(__file__).resolve().parent.parent / "docs" / "reliability.md").read_text()
    v, f = test_hostile_values.count_tries(), count_tries()
    assert (f"| {sum(v.values())}: NaN/inf {v['non-finite']}, integers {v['integers']}, range edges {v['edges']}, "
            f"memory {v['memory']}, lists {v['lists']} |") in doc
    assert f"| {f['faults']}: " in doc and f"| {f['messages']}: " in doc
