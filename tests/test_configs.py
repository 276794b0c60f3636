"""Every shipped agent x environment composes from the real configs and trains a few hundred steps;
values that cannot work fail before training with a ConfigError that says what to do."""

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf

from rlzoo.config import SETTINGS, RunConfig, type_error
from rlzoo.errors import ConfigError
from rlzoo.train import CONF_DIR, build, train, validate

AGENTS = ["qtable", "dqn", "double_dqn", "dueling_dqn", "dueling_double_dqn"]
ENVS = [["env=cartpole"], ["env=frozenlake"], ["env=cliffwalking"], ["env=taxi"], ["env=chain"],
        ["env=gym", "env.id=Acrobot-v1"]]


@pytest.mark.parametrize("agent", AGENTS)
@pytest.mark.parametrize("env", ENVS, ids=lambda e: e[-1].split("=")[1])
def test_agent_env_smoke(cfg_factory, tmp_path, agent, env):
    cfg = cfg_factory(f"agent={agent}", *env, "total_steps=150", "learning_starts=50", "train_freq=1", "batch_size=8",
                      "buffer_size=100" if agent != "qtable" else "buffer_size=1",
                      "eval_every=150", "eval_episodes=1", "log_every=50", "n_seeds=2", "progress=false",
                      "env.max_episode_steps=40")
    if agent == "qtable":
        cfg.batch_size = 1
    parts = train(cfg, tmp_path, agent, progress=False)
    assert parts.state.step == 150
    metrics = pd.read_csv(tmp_path / "metrics.csv")
    assert len(metrics) == 3 * 2 and set(metrics.seed) == {0, 1}
    assert metrics["updates"].iloc[-1] == 101  # one update per step from step 50 to 150
    assert metrics["loss"].notna().all()
    returns = pd.read_csv(tmp_path / "returns.csv")
    assert set(returns.phase) == {"train", "eval"}
    assert (returns.agent == agent).all()


def test_variants_differ_only_in_their_component(cfg_factory):
    dqn = cfg_factory("agent=dqn").agent
    double = cfg_factory("agent=double_dqn").agent
    dueling = cfg_factory("agent=dueling_dqn").agent
    both = cfg_factory("agent=dueling_double_dqn").agent
    assert {k for k in dqn if dqn[k] != double[k]} == {"target_fn"}
    assert {k for k in dqn if dqn[k] != dueling[k]} == {"head"}
    assert both.head == dueling.head and both.target_fn == double.target_fn


@pytest.mark.parametrize("overrides, words", [
    (["lr=-0.1"], "lr must be > 0"),
    (["n_seeds=0"], "n_seeds must be >= 1"),
    (["batch_size=512", "buffer_size=100"], "larger than replay.capacity"),
    (["learning_starts=5000", "total_steps=1000"], "larger than total_steps"),
    (["gamma=1.5"], "gamma must be <= 1"),
    (["lr=nan"], "lr must be a finite number"),  # a wrong type (lr=fast) stops earlier, while composing: below
    (["loss=l3"], "loss must be 'huber' or 'mse'"),
    (["env=gym", "env.id=Pendulum-v1"], "need discrete actions"),
    (["env=gym", "env.id=NoSuchEnv-v0"], "gymnasium cannot make 'NoSuchEnv-v0'"),
    (["agent=qtable", "env=gym", "env.id=Acrobot-v1", "agent.discretizer.bins=100"], "lower agent.discretizer.bins"),
    (["agent=qtable", "env=gym", "env.id=Acrobot-v1", "env.obs_bounds=null"], None),
])
def test_bad_values_fail_before_training(cfg_factory, tmp_path, overrides, words):
    cfg = cfg_factory(*overrides, "total_steps=1000" if not any("total_steps" in o for o in overrides) else "seed=0")
    if words is None:  # Acrobot's space is bounded: the grid comes from the observation space
        build(cfg, tmp_path, "x").close()
        return
    with pytest.raises(ConfigError, match=words.replace("(", r"\(").replace("'", "'")):
        build(cfg, tmp_path, "x")


def test_cli_reports_one_line_and_lists_choices(tmp_path):
    bad = subprocess.run([sys.executable, "-m", "rlzoo", "lr=-1", f"hydra.run.dir={tmp_path}/r"],
                         capture_output=True, text=True)
    assert bad.returncode == 2
    assert bad.stderr.strip() == "rlzoo: error: lr must be > 0, got -1.0"
    unknown = subprocess.run([sys.executable, "-m", "rlzoo", "agent=rainbowz", f"hydra.run.dir={tmp_path}/u"],
                             capture_output=True, text=True)
    assert unknown.returncode != 0
    assert "Traceback" not in unknown.stderr
    for choice in ("dqn", "double_dqn", "dueling_dqn", "qtable"):
        assert choice in unknown.stderr


# groups outside conf/config.yaml's defaults are added with "+" (the ablation group comes with agent=rainbow)
GROUP_OPTIONS = sorted(f"{p.parent.name}={p.stem}" if p.parent.name != "ablation" else f"agent=rainbow +ablation={p.stem}"
                       for p in Path(CONF_DIR).glob("*/*.yaml") if p.parent.name != "experiment")
EXPERIMENTS = sorted(f"+experiment={p.stem}" for p in Path(CONF_DIR).glob("experiment/*.yaml"))


@pytest.mark.parametrize("option", GROUP_OPTIONS + EXPERIMENTS)
def test_every_group_option_composes_with_the_schema(cfg_factory, option):
    """Each option and experiment fits the schema: every top-level value set, of its type, and valid."""
    cfg = cfg_factory(*option.split(), *(["env.id=Acrobot-v1"] if option == "env=gym" else []))
    assert OmegaConf.get_type(cfg) is RunConfig
    assert not OmegaConf.missing_keys(cfg)
    for key, (kind, nullable) in SETTINGS.items():
        assert type(cfg[key]) is kind or (nullable and cfg[key] is None), (key, cfg[key])
    validate(cfg)


def test_schema_types_the_values_of_config_yaml(cfg_factory):
    cfg = cfg_factory("gamma=1", "seed=7", "resume=false")
    assert cfg.gamma == 1.0 and isinstance(cfg.gamma, float)  # an int given for a float becomes a float
    assert isinstance(cfg.seed, int) and cfg.resume is False
    yaml_keys = set(OmegaConf.load(Path(CONF_DIR) / "config.yaml")) - {"defaults", "hydra"}
    groups = {"agent", "env", "network", "replay", "target_sync", "optimizer"}
    assert yaml_keys | groups == {f.name for f in dataclasses.fields(RunConfig)}


@pytest.mark.parametrize("override, message", [
    ("seed=abc", "seed must be a whole number, got 'abc'"),
    ("n_seeds=2.5", "n_seeds must be a whole number, got 2.5"),
    ("lr=fast", "lr must be a number, got 'fast'"),
    ("lr_end=slow", "lr_end must be a number or null, got 'slow'"),
    ("resume=maybe", "resume must be true or false, got 'maybe'"),
    ("seed=null", "seed must be a whole number, got null"),
    ("loss=[huber]", "loss must be text, got ['huber']"),
])
def test_wrong_type_fails_while_composing_with_one_sentence(cfg_factory, override, message):
    with pytest.raises(ConfigCompositionException) as err:
        cfg_factory(override)
    assert type_error(err.value) == message


def test_wrong_type_behind_an_interpolation_fails_in_validate(cfg_factory, monkeypatch):
    monkeypatch.setenv("RLZOO_TEST_SEED", "abc")
    cfg = cfg_factory("seed=${oc.env:RLZOO_TEST_SEED}")
    with pytest.raises(ConfigError, match="^seed must be a whole number, got 'abc'$"):
        validate(cfg)


def test_cli_wrong_type_is_one_line_and_full_error_shows_the_traceback(tmp_path):
    env = {**os.environ, "HYDRA_FULL_ERROR": "0"}
    bad = subprocess.run([sys.executable, "-m", "rlzoo", "seed=abc", f"hydra.run.dir={tmp_path}/r"],
                         capture_output=True, text=True, env=env)
    assert bad.returncode == 2
    assert bad.stderr.strip() == "rlzoo: error: seed must be a whole number, got 'abc'"
    full = subprocess.run([sys.executable, "-m", "rlzoo", "seed=abc", f"hydra.run.dir={tmp_path}/f"],
                          capture_output=True, text=True, env={**env, "HYDRA_FULL_ERROR": "1"})
    assert full.returncode != 0 and "Traceback" in full.stderr and "ValidationError" in full.stderr
    assert not (tmp_path / "r").exists() and not (tmp_path / "f").exists()
