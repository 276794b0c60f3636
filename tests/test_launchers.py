"""Hydra's launcher plugins run rlzoo sweeps: every launcher config composes; the basic, joblib, submitit_local and
Ray launchers run a small sweep for real and write the same CSVs; SLURM's documented overrides become the sbatch
options (checked on the script submitit hands to ``sbatch``); each job limits its own threads."""

from __future__ import annotations

import importlib.util
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from rlzoo.train import CONF_DIR, available_cores
from conftest import read_rows

JOB = ["total_steps=400", "learning_starts=100", "eval_every=200", "eval_episodes=2", "log_every=100",
       "buffer_size=500", "checkpoint_every=200", "progress=false"]
SEEDS = "seed=0,1"


def has(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


needs_submitit = pytest.mark.skipif(not has("hydra_plugins.hydra_submitit_launcher"),
                                    reason="hydra-submitit-launcher is not installed: pip install -e '.[slurm]'")
needs_ray = pytest.mark.skipif(not (has("ray") and has("hydra_plugins.hydra_ray_launcher")),
                               reason="ray or hydra-ray-launcher is not installed: pip install -e '.[ray]'")
LAUNCHERS = [pytest.param("basic"), pytest.param("joblib"),
             pytest.param("submitit_local", marks=needs_submitit), pytest.param("submitit_slurm", marks=needs_submitit),
             pytest.param("ray", marks=needs_ray)]


def hydra_cfg(*overrides):
    with initialize_config_dir(CONF_DIR, version_base="1.3"):
        return compose("config", overrides=list(overrides), return_hydra_config=True).hydra


@pytest.mark.parametrize("launcher", LAUNCHERS)
def test_every_launcher_config_composes(launcher):
    assert hydra_cfg(f"hydra/launcher={launcher}").launcher._target_.endswith(
        {"basic": "BasicLauncher", "joblib": "JoblibLauncher", "submitit_local": "LocalLauncher",
         "submitit_slurm": "SlurmLauncher", "ray": "RayLauncher"}[launcher])


@needs_submitit
def test_slurm_overrides_documented_in_cluster_md_compose():
    launcher = hydra_cfg("hydra/launcher=submitit_slurm", "hydra.launcher.partition=cpu", "hydra.launcher.timeout_min=240",
                         "hydra.launcher.cpus_per_task=4", "hydra.launcher.mem_gb=8",
                         "hydra.launcher.array_parallelism=20", "hydra.launcher.max_num_timeout=3").launcher
    assert (launcher.partition, launcher.timeout_min, launcher.cpus_per_task, launcher.mem_gb,
            launcher.array_parallelism, launcher.max_num_timeout) == ("cpu", 240, 4, 8, 20, 3)


def run_sweep(sweep_dir: Path, *launcher_args: str, timeout: int = 1800) -> dict[str, Path]:
    """A two-job sweep; returns job directory name -> path."""
    done = subprocess.run([sys.executable, "-m", "rlzoo", "-m", SEEDS, *JOB, *launcher_args,
                           f"hydra.sweep.dir={sweep_dir}"], capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, (done.stdout[-2000:], done.stderr[-3000:])
    jobs = {p.name: p for p in sweep_dir.iterdir() if p.is_dir() and p.name[0].isdigit()}
    assert len(jobs) == 2
    return jobs


@pytest.fixture(scope="module")
def basic_sweep(tmp_path_factory):
    return run_sweep(tmp_path_factory.mktemp("basic") / "sweep")


def same_csvs(jobs: dict[str, Path], reference: dict[str, Path]) -> None:
    assert jobs.keys() == reference.keys()
    for name, ref in reference.items():
        for table in ("returns.csv", "metrics.csv"):
            rows = read_rows(ref / table)
            assert len(rows) >= 4 and read_rows(jobs[name] / table) == rows, (name, table)
        # each job trained on one thread, whatever the launcher
        assert "threads: torch 1, BLAS 1 (threads=1)" in (jobs[name] / "train.log").read_text()


@pytest.mark.parametrize("launcher_args", [
    pytest.param(["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"], id="joblib"),
    pytest.param(["hydra/launcher=submitit_local", "hydra.launcher.timeout_min=30"], id="submitit_local",
                 marks=needs_submitit),
])
def test_launchers_write_the_csvs_of_the_basic_launcher(tmp_path, basic_sweep, launcher_args):
    same_csvs(run_sweep(tmp_path / "sweep", *launcher_args), basic_sweep)


@needs_ray
@pytest.mark.launchers
def test_ray_launcher_on_a_local_ray_head_writes_the_csvs_of_the_basic_launcher(tmp_path, basic_sweep):
    """Starts a local Ray instance (2 CPUs, no dashboard) in the sweep's process; Ray stops with it. Ray gives its
    raylet 30 s to register (a constant in ray/_private/node.py): on a saturated machine that can fail, so a start-up
    timeout is retried, twice at most, in a fresh sweep directory."""
    args = ["hydra/launcher=ray", "+hydra.launcher.ray.init.num_cpus=2", "+hydra.launcher.ray.init.include_dashboard=false",
            "+hydra.launcher.ray.remote.num_cpus=1"]
    for attempt in range(3):
        try:
            jobs = run_sweep(tmp_path / f"sweep{attempt}", *args)
            break
        except AssertionError as e:
            if "timed out during startup" not in str(e) or attempt == 2:
                raise
    same_csvs(jobs, basic_sweep)


@needs_submitit
def test_slurm_overrides_become_sbatch_options(tmp_path):
    """``sbatch`` on PATH is a stand-in that keeps the script submitit wrote and refuses the job (the sweep then
    fails), so the test sees exactly what a cluster would receive."""
    bin_dir, kept = tmp_path / "bin", tmp_path / "kept.sh"
    bin_dir.mkdir()
    fake = bin_dir / "sbatch"
    fake.write_text(f"#!/bin/sh\ncp \"$1\" {kept}\necho 'sbatch: error: this is a test' >&2\nexit 1\n")
    (bin_dir / "srun").write_text("#!/bin/sh\nexit 1\n")  # submitit looks for srun to tell it is on a cluster
    for tool in (fake, bin_dir / "srun"):
        tool.chmod(tool.stat().st_mode | stat.S_IEXEC)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    subprocess.run([sys.executable, "-m", "rlzoo", "-m", "seed=0,1,2", *JOB, "hydra/launcher=submitit_slurm",
                    "hydra.launcher.partition=cpu", "hydra.launcher.timeout_min=240", "hydra.launcher.cpus_per_task=2",
                    "hydra.launcher.mem_gb=8", "hydra.launcher.array_parallelism=2", f"hydra.sweep.dir={tmp_path / 's'}"],
                   capture_output=True, text=True, timeout=300, env=env)
    script = kept.read_text()
    for line in ("#SBATCH --partition=cpu", "#SBATCH --time=240", "#SBATCH --cpus-per-task=2", "#SBATCH --mem=8GB",
                 "#SBATCH --array=0-2%2"):
        assert line in script, (line, script)


def test_available_cores_follows_slurm_and_the_affinity_mask(monkeypatch):
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "3")
    assert available_cores() == 3
    monkeypatch.delenv("SLURM_CPUS_PER_TASK")
    assert available_cores() == len(os.sched_getaffinity(0))
