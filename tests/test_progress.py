"""What a run prints: the progress line (fits the terminal, ends with a newline, shows ETA and the latest
evaluation; plain tagged lines off a terminal), the end-of-run and sweep summaries, and run-directory names."""

from __future__ import annotations

import io
import shlex
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from rlzoo.io.rundir import env_name, seed_range
from rlzoo.progress import Progress, evaluation_stats, format_duration, read_evaluations, run_summary, sweep_summary
from rlzoo.train import CONF_DIR


class Clock:
    def __init__(self):
        self.t = 100.0

    def __call__(self):
        return self.t


class Terminal(io.StringIO):
    def isatty(self):
        return True


def test_terminal_line_fits_80_columns_and_ends_with_a_newline(monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")
    clock, out = Clock(), Terminal()
    p = Progress(1_000_000, stream=out, tag="12 dueling_double_dqn", clock=clock)
    for step in range(0, 1_000_001, 50_000):
        clock.t += 5
        if step == 500_000:
            p.evaluated(step, [487.25, 500.0, 12.5])
        p.update(step, 12345.6, [500.0, 321.0, None, 12.0] * 5, force=True)
    p.close()
    text = out.getvalue()
    assert text.endswith("\n") and text.count("\n") == 1  # redrawn in place, one newline at the end
    drawn = [s for s in text.replace("\n", "\r").split("\r") if s.strip()]
    assert len(drawn) > 10 and max(len(s.rstrip()) for s in drawn) <= 79
    assert "eval 333.2" in drawn[-1] and "[12 dueling_double_dqn]" in drawn[-1]
    p.close()  # twice: still one newline
    assert out.getvalue().count("\n") == 1


def test_plain_lines_off_a_terminal_with_eta_and_evaluation():
    clock, out = Clock(), io.StringIO()
    p = Progress(5000, stream=out, tag="3 dqn", log_interval=30.0, clock=clock)
    clock.t += 10
    p.update(1000, 100.0, [20.0, None])  # 10 s since the start: too early for a line
    assert out.getvalue() == ""
    clock.t += 30  # 40 s for 1,000 of 5,000 steps: 160 s left
    p.evaluated(1000, [10.0, 30.0])
    p.update(1000, 100.0, [20.0, None])
    line = out.getvalue()
    assert "\r" not in line and line.endswith("\n")
    assert line == "[3 dqn] step 1,000/5,000 (20%) 0:40<2:40 100/s eval 20.0 ret 20 -\n"
    p.close()
    assert out.getvalue() == line  # nothing to end: every plain line ends with its newline


def test_plain_on_a_terminal_for_parallel_jobs():
    clock, out = Clock(), Terminal()
    p = Progress(100, stream=out, plain=True, clock=clock, tag="1 dqn")
    clock.t += 1
    p.update(50, 10.0, [1.0], force=True)
    p.close()
    assert out.getvalue().startswith("[1 dqn] step 50/100") and "\r" not in out.getvalue()


def test_eta_counts_from_a_resumed_step():
    clock = Clock()
    p = Progress(10_000, stream=io.StringIO(), clock=clock)
    p.restart(6_000)
    clock.t += 20
    assert p.eta(7_000) == pytest.approx(60.0)  # 1,000 steps in 20 s; 3,000 left
    assert p.eta(6_000) == float("inf")


def test_many_members_give_way_to_their_mean():
    p = Progress(10, stream=io.StringIO())
    assert p.status(5.0, [100.0] * 3) == "5/s ret 100 100 100"
    assert p.status(5.0, [100.0, 300.0] * 20, room=30) == "5/s ret mean 200.0 (40/40)"


def write_returns(path: Path, rows) -> None:
    path.mkdir(parents=True, exist_ok=True)
    lines = ["agent,env,seed,phase,step,episode,return,length"]
    lines += [f"dqn,CartPole-v1,{s},{ph},{st},1,{r},1" for s, ph, st, r in rows]
    (path / "returns.csv").write_text("\n".join(lines) + "\n")


ROWS = [(0, "train", 50, 9.0), (0, "eval", 100, 10.0), (0, "eval", 100, 20.0), (1, "eval", 100, 40.0),
        (1, "eval", 100, 60.0), (0, "eval", 200, 30.0), (0, "eval", 200, 30.0), (1, "eval", 200, 20.0),
        (1, "eval", 200, 10.0), (0, "evaluate", 200, 999.0)]


def test_evaluation_stats_by_hand(tmp_path):
    write_returns(tmp_path, ROWS)
    stats = evaluation_stats(read_evaluations(tmp_path))
    # seed 0: step 100 -> 15, step 200 -> 30; seed 1: step 100 -> 50, step 200 -> 15
    assert stats["last"] == {0: (200, 30.0), 1: (200, 15.0)} and stats["best"] == {0: (200, 30.0), 1: (100, 50.0)}
    assert stats["last_mean"] == 22.5 and stats["last_step"] == 200
    assert stats["best_mean"] == (100, 32.5) and stats["episodes"] == 2  # over members: 32.5 at 100, 22.5 at 200


def test_run_summary_names_results_and_next_commands(tmp_path):
    run = tmp_path / "my runs" / "2026_dqn_CartPole-v1_seed0-1"
    write_returns(run, ROWS)
    (run / "models").mkdir()
    (run / "models" / "final.safetensors").write_bytes(b"x")
    text = run_summary(run, 192.4, title="dqn on CartPole-v1", models=[run / "models" / "final.safetensors"])
    assert "finished dqn on CartPole-v1 in 3 min 12 s" in text
    assert "mean 22.5 over 2 members" in text and "best evaluation: mean 32.5 at step 100" in text
    assert "   1:    15.0 /    50.0 (100)" in text
    assert f"python -m analysis.plot_curves {shlex.quote(str(run))}" in text and "'" in shlex.quote(str(run))
    assert f"python -m rlzoo.watch {shlex.quote(str(run))}" in text and "models/final.safetensors" in text


def test_run_summary_without_evaluations_suggests_the_training_curve(tmp_path):
    write_returns(tmp_path, [(0, "train", 10, 5.0), (0, "train", 20, 7.0)])
    text = run_summary(tmp_path, 4.0)
    assert "no evaluations" in text and "--phase train" in text and "7.0" in text


def test_sweep_summary(tmp_path):
    write_returns(tmp_path / "0_agent=dqn", ROWS)
    write_returns(tmp_path / "1_agent=double_dqn", [(0, "train", 5, 1.0)])
    text = sweep_summary(tmp_path)
    assert "2 run(s)" in text and "0_agent=dqn" in text and "last 22.5 (step 200), best 32.5 at 100" in text
    assert "1_agent=double_dqn  no evaluations" in text and f"analysis.summary {tmp_path}" in text


def test_format_duration():
    assert [format_duration(s) for s in (4.24, 59, 75, 3725)] == ["4.2 s", "59 s", "1 min 15 s", "1 h 02 min"]


# -- run directories -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("overrides, name", [
    ([], "CartPole-v1"), (["env=atari"], "ALE-Pong-v5"), (["env=atari", "env.id=ALE/Breakout-v5"], "ALE-Breakout-v5"),
    (["env=minatar", "env.game=space_invaders"], "MinAtar-space_invaders"), (["env=frozenlake"], "FrozenLake-v1"),
    (["env=gym", "env.id=Acrobot-v1"], "Acrobot-v1"), (["env=chain"], "rlzoo-Chain-v0")])
def test_env_name_comes_from_the_env_config(overrides, name):
    with initialize_config_dir(CONF_DIR, version_base="1.3"):
        cfg = compose("config", overrides=overrides)
    assert env_name(cfg.env) == name


def test_seed_range():
    assert seed_range(3, 1) == "seed3" and seed_range(0, 10) == "seed0-9" and seed_range(5, 5) == "seed5-9"


def test_run_dir_is_named_after_env_and_seeds():
    with initialize_config_dir(CONF_DIR, version_base="1.3"):
        cfg = compose("config", overrides=["env=minatar", "env.game=breakout", "agent=double_dqn", "n_seeds=5",
                                           "seed=10"], return_hydra_config=True)
    cfg.hydra.runtime.choices.agent = "double_dqn"  # what Hydra fills in at run time
    OmegaConf.register_new_resolver("now", lambda fmt: "T", replace=True) if not OmegaConf.has_resolver("now") else None
    name = Path(OmegaConf.to_container(cfg.hydra.run, resolve=True)["dir"]).name
    assert name.endswith("_double_dqn_MinAtar-breakout_seed10-14")
