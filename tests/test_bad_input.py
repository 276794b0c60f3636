"""Wrong inputs, tried systematically. Each ends with a one-sentence error and a non-zero exit, without a
traceback, and leaves every existing result file as it was.

True command-line checks (``python -m rlzoo`` in a subprocess, about 5 s each) cover one input of each
kind; the rest go through ``train()`` in-process, which is the same code path below Hydra's own parsing.
A value of the wrong type is refused while Hydra composes (the schema, rlzoo.config.RunConfig): in-process,
``compose`` reports it as the command line does.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra.errors import ConfigCompositionException

from rlzoo.config import type_error
from rlzoo.io import checkpoint
from rlzoo.errors import ConfigError
from rlzoo.train import train
from conftest import make_cfg

RUN = ["total_steps=300", "learning_starts=100", "eval_every=0", "log_every=100", "buffer_size=500",
       "checkpoint_every=200", "progress=false"]
RESULT_FILES = ("returns.csv", "metrics.csv", checkpoint.FILENAME)


class Exploit:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    """A short finished run, with a checkpoint at its end and a stand-in for Hydra's .hydra/ files."""
    d = tmp_path_factory.mktemp("finished") / "run"
    train(make_cfg(*RUN), d, "dqn")
    (d / ".hydra").mkdir()
    (d / ".hydra" / "config.yaml").write_text("# the run's own config\n")
    return d


# -- damage to an existing run: each function gets a copy of the finished run and changes it ------------------
def corrupt_checkpoint(d: Path):
    data = (d / checkpoint.FILENAME).read_bytes()
    (d / checkpoint.FILENAME).write_bytes(data[: len(data) // 2])  # killed while copying / disk full


def garbage_checkpoint(d: Path):
    (d / checkpoint.FILENAME).write_bytes(os.urandom(4096))


def pickled_exploit(d: Path):
    torch.save({"format": checkpoint.FORMAT, "version": checkpoint.VERSION, "step": 1, "meta": Exploit()},
               d / checkpoint.FILENAME)


def truncated_csv(d: Path):
    data = (d / "returns.csv").read_bytes()
    (d / "returns.csv").write_bytes(data[: len(data) // 2])  # cut mid-row, shorter than at the checkpoint


def edited_csv(d: Path):
    data = bytearray((d / "metrics.csv").read_bytes())
    data[len(data) // 2] = ord("9") if data[len(data) // 2] != ord("9") else ord("8")
    (d / "metrics.csv").write_bytes(bytes(data))


def killed_without_checkpoint(d: Path):
    (d / checkpoint.FILENAME).unlink()
    with open(d / "returns.csv", "ab") as f:
        f.write(b"dqn,CartPole-v1,0,train,301,9")  # a killed run's last, partial row


def unchanged_copy(d: Path):
    pass


def snapshot(d: Path) -> dict:
    return {p.relative_to(d): p.read_bytes() for p in d.rglob("*") if p.is_file()}


def assert_untouched(d: Path, before: dict) -> None:
    after = snapshot(d)
    for path, data in before.items():
        if path.name == "train.log":  # Hydra's log: appended to, never rewritten
            assert after[path].startswith(data)
        elif path.name == ".lock":  # rlzoo.io.lock: it names the last process that held the directory
            continue
        else:
            assert after.get(path) == data, f"{path} was changed"
    # A launch's own Hydra files (.hydra/launch-<time>/, train.log) are fine.
    new = [p for p in after if p not in before and p.parts[0] != ".hydra" and p.name not in ("train.log", ".lock")]
    assert not new, new
    assert not (d / "pwned").exists() and not Path("pwned").exists()


# -- the command line ----------------------------------------------------------------------------------------
def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "rlzoo", *RUN, *args], capture_output=True, text=True, timeout=180,
                          env={**os.environ, "HYDRA_FULL_ERROR": "0"})


def assert_one_line_error(proc: subprocess.CompletedProcess, *words: str) -> None:
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out
    assert "Traceback" not in out, out
    errors = [line for line in proc.stderr.splitlines() if line.startswith("rlzoo: error:")]
    assert len(errors) == 1, proc.stderr
    for word in words:
        assert word.lower() in errors[0].lower(), errors[0]


CLI_FRESH = [  # (overrides, words the error must contain)
    (["total_steps=abc"], ["total_steps", "whole number"]),
    (["env=gym", "env.id=NoSuchGame-v0"], ["NoSuchGame-v0", "registered"]),
    (["env=gym", "env.id=Pendulum-v1"], ["Pendulum-v1", "discrete actions"]),
    (["agent=qtable", "env=atari", "env.id=ALE/Pong-v5"], ["Q-table", "agent=dqn"]),
    (["batch_size=512"], ["batch_size=512", "capacity=500"]),
    (["target_sync.every=5"], ["target_sync.every", "no key 'every'", "target_sync=hard"]),  # the default is soft
]


@pytest.mark.parametrize("overrides,words", CLI_FRESH, ids=[" ".join(o) for o, _ in CLI_FRESH])
def test_cli_bad_value(tmp_path, overrides, words):
    proc = cli(*overrides, f"hydra.run.dir={tmp_path / 'run'}")
    assert_one_line_error(proc, *words)
    assert not any((tmp_path / "run" / name).exists() for name in RESULT_FILES)


def test_cli_unwritable_output_dir():
    proc = cli("hydra.run.dir=/proc/rlzoo-cannot-write-here")
    assert_one_line_error(proc, "cannot write", "hydra.run.dir")


@pytest.mark.parametrize("overrides,words", [(["agent=no_such_agent"], ["agent/no_such_agent", "dqn", "double_dqn"]),
                                             (["totl_steps=5"], ["totl_steps"])], ids=["unknown agent", "misspelled key"])
def test_cli_hydra_rejects_unknown_names_without_a_traceback(tmp_path, overrides, words):
    """Hydra's own messages: the unknown option with the available choices, the key that is not in the config."""
    proc = cli(*overrides, f"hydra.run.dir={tmp_path / 'run'}")
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "Traceback" not in out
    assert all(w in proc.stderr for w in words), proc.stderr
    assert not (tmp_path / "run").exists()


CLI_EXISTING = [  # (how the run directory was damaged, extra overrides, words)
    (garbage_checkpoint, ["resume=true"], ["not a readable checkpoint"]),
    (pickled_exploit, ["resume=true"], ["refused"]),
    (truncated_csv, ["resume=true"], ["returns.csv", "truncated"]),
    (unchanged_copy, [], ["already holds a run", "resume=true"]),
]


@pytest.mark.parametrize("damage,overrides,words", CLI_EXISTING, ids=[d.__name__ for d, _, _ in CLI_EXISTING])
def test_cli_existing_run(finished_run, tmp_path, damage, overrides, words):
    d = tmp_path / "run"
    shutil.copytree(finished_run, d)
    damage(d)
    before = snapshot(d)
    proc = cli(*overrides, f"hydra.run.dir={d}")
    assert_one_line_error(proc, *words)
    assert_untouched(d, before)


# -- the same checks in-process -------------------------------------------------------------------------------
def compose(*overrides: str):
    """The composed config; a value of the wrong type raises the ConfigError whose message ``python -m rlzoo``
    prints (``rlzoo.train.main`` turns Hydra's composition error into the same sentence)."""
    try:
        return make_cfg(*overrides)
    except ConfigCompositionException as e:
        message = type_error(e)
        if message is None:
            raise
        raise ConfigError(message) from e


IN_PROCESS = [
    # negative or zero sizes
    (["n_seeds=0"], "n_seeds must be >= 1"),
    (["seed=18446744073709551615", "n_seeds=2"], "seed + n_seeds - 1 must be at most 2**64 - 1"),
    (["total_steps=-5"], "total_steps must be >= 1"),
    (["buffer_size=0"], "buffer_size must be >= 1, got 0"),
    (["batch_size=0"], "batch_size must be >= 1, got 0"),
    (["learning_starts=-1"], "learning_starts must be >= 0"),
    (["train_freq=0"], "train_freq must be >= 1"),
    (["log_every=-1"], "log_every must be >= 1"),
    (["eval_episodes=0"], "eval_episodes must be >= 1"),
    (["checkpoint_every=-100"], "checkpoint_every must be >= 0"),
    (["target_sync=hard", "target_sync.every=0"], "target_sync.every must be >= 1"),
    (["env.max_episode_steps=0"], "env.max_episode_steps must be >= 1"),
    # wrong types and out-of-range values
    (["n_seeds=1.5"], "n_seeds must be a whole number, got 1.5"),
    (["total_steps=1e6"], "total_steps must be a whole number written in digits, e.g. total_steps=1000000"),
    (["lr=fast"], "lr must be a number, got 'fast'"),
    (["lr=nan"], "lr must be a finite number, got nan"),
    (["gamma=inf"], "gamma must be a finite number, got inf"),
    (["gamma=1.5"], "gamma must be <= 1"),
    (["eps_start=2"], "eps_start must be <= 1"),
    (["resume=maybe"], "resume must be true or false, got 'maybe'"),  # yes/no, on/off, 1/0 are read as booleans
    (["nan_check=0.5"], "nan_check must be true or false, got 0.5"),
    (["fast_path=[true]"], "fast_path must be true or false, got [True]"),
    (["threads=-1"], "threads must be >= 0"),
    (["loss=l1"], "loss must be 'huber' or 'mse'"),
    (["device=tpu"], "device must be"),
    (["agent=qtable", "env=taxi", "agent.lr=2"], "Q-table learning rate must be in (0, 1]"),
    # combinations that cannot work
    (["batch_size=600"], "replay.batch_size=600 is larger than replay.capacity=500"),
    (["learning_starts=1000"], "learning_starts=1000 is larger than total_steps=300"),
    (["env=gym"], "env.id must be given a value"),
    (["env=minatar", "env.game=pong"], "not a MinAtar game"),
    (["network=nature_cnn"], "use network=mlp"),
    (["replay=frames"], "use replay=uniform"),
    (["env=frozenlake", "+env.kwargs.bogus=1"], "unexpected keyword argument 'bogus'"),
]


@pytest.mark.parametrize("overrides,message", IN_PROCESS, ids=[" ".join(o) for o, _ in IN_PROCESS])
def test_bad_value_in_process(tmp_path, overrides, message):
    with pytest.raises(ConfigError) as err:
        train(compose(*RUN, *overrides), tmp_path, "x")
    assert message.lower() in str(err.value).lower() and "\n" not in str(err.value)
    assert not any((tmp_path / name).exists() for name in RESULT_FILES)


EXISTING = [
    (corrupt_checkpoint, ["resume=true"], "is truncated or corrupted"),
    (edited_csv, ["resume=true"], "metrics.csv differ from what was written"),
    (killed_without_checkpoint, ["resume=true"], "has no checkpoint.pt"),
    (killed_without_checkpoint, [], "already holds results"),
    (unchanged_copy, ["resume=true", "agent.gamma=0.9"], "which this command changes"),
]


@pytest.mark.parametrize("damage,overrides,message", EXISTING, ids=[f"{d.__name__} {' '.join(o)}" for d, o, _ in EXISTING])
def test_existing_run_in_process(finished_run, tmp_path, damage, overrides, message):
    d = tmp_path / "run"
    shutil.copytree(finished_run, d)
    damage(d)
    before = snapshot(d)
    with pytest.raises(checkpoint.CheckpointError, match=message):
        train(make_cfg(*RUN, *overrides), d, "dqn")
    assert_untouched(d, before)


def count_bad_inputs() -> int:
    """The number of distinct wrong inputs in this file (quoted in docs/reliability.md)."""
    return len(CLI_FRESH) + 1 + 2 + len(CLI_EXISTING) + len(IN_PROCESS) + len(EXISTING)


def test_count_is_what_the_docs_say():
    doc = (Path(__file__).resolve().parent.parent / "docs" / "reliability.md").read_text()
    assert f"{count_bad_inputs()} wrong inputs" in doc
