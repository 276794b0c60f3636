"""Hostile values (issue 12, category 4, and category 6's "a rejected config leaves no run directory"):
NaN and infinity for every numeric key, top-level and inside every group option; integers beyond what numpy
and torch take; documented range edges that must work; sizes that do not fit in memory, refused with the
estimate before anything is allocated; discretiser lists of the wrong length.

Each refused value is tried in-process (``compose`` + ``train``, the code path below Hydra's parsing; the
command line is tried in tests/test_bad_input.py and tests/test_hostile_faults.py): it must raise one
ConfigError whose single line names the key, and leave no run directory behind.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import yaml
from hydra.errors import ConfigCompositionException

from rlzoo import train as rlzoo_train
from rlzoo.config import numeric_ranges, type_error
from rlzoo.errors import ConfigError
from rlzoo.loop import value_estimate_vs_return
from rlzoo.replay.frames import FrameStorage
from rlzoo.replay.storage import TransitionStorage
from rlzoo.train import CONF_DIR, train
from conftest import make_cfg, read_rows

RUN = ["total_steps=300", "learning_starts=100", "eval_every=0", "log_every=100", "buffer_size=500",
       "checkpoint_every=0", "progress=false"]


def refused(tmp_path, *overrides: str) -> str:
    """The one-line error a config is refused with (composition or training), after checking that nothing
    was left on disk."""
    run_dir = tmp_path / "run"
    try:
        try:
            cfg = make_cfg(*RUN, *overrides)
        except ConfigCompositionException as e:
            message = type_error(e)
            if message is None:
                raise
            raise ConfigError(message) from e
        train(cfg, run_dir, "x")
    except ConfigError as e:
        message = str(e)
    else:
        pytest.fail(f"{overrides} was accepted")
    assert "\n" not in message, message
    assert not run_dir.exists(), sorted(p.name for p in run_dir.iterdir())
    return message


# -- NaN and infinity, top-level keys -----------------------------------------------------------------------
TOP = sorted(numeric_ranges())


@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
@pytest.mark.parametrize("key", TOP)
def test_every_top_level_number_refuses_nan_and_inf(tmp_path, key, value):
    message = refused(tmp_path, f"{key}={value}")
    if numeric_ranges()[key]["integer"]:  # the schema's type check: a whole number
        assert message == f"{key} must be a whole number{' or null' if key == 'eps_decay_steps' else ''}, got {value}"
    else:
        assert message == f"{key} must be a finite number, got {value}"


# -- NaN and infinity, every number of every group option -----------------------------------------------------
GROUP_OPTIONS = ("agent", "env", "network", "replay", "replay/sampler", "target_sync", "optimizer")
EXTRA = {"env=gym": ["env.id=CartPole-v1"]}  # what an option needs to compose and validate


def _numeric_leaves(node, path):
    """(path, value) of every number in a YAML option, lists as one whole value."""
    if isinstance(node, dict):
        for k, v in node.items():
            if k in ("defaults", "_target_"):
                continue
            yield from _numeric_leaves(v, f"{path}.{k}" if path else k)
    elif isinstance(node, list) and node and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in node):
        yield path, node
    elif isinstance(node, (int, float)) and not isinstance(node, bool):
        yield path, node


def group_numbers():
    """Every literal number of every option of every group in conf/ (interpolations such as ``${gamma}`` are
    the top-level keys above): (option choice, key, its value)."""
    out = []
    for group in GROUP_OPTIONS:
        for option in sorted((Path(CONF_DIR) / group).glob("*.yaml")):
            node = yaml.safe_load(option.read_text()) or {}
            if group == "agent" and "agent" in node and "_target_" not in node:  # qtable.yaml: a package-global file
                node = node["agent"]
            prefix = group.replace("/", ".")
            for key, value in _numeric_leaves(node, ""):
                out.append((f"{group}={option.stem}", f"{prefix}.{key}", value))
    return out


GROUP_NUMBERS = group_numbers()


def _with(value, bad):
    return "[" + ",".join([bad] + [str(v) for v in value[1:]]) + "]" if isinstance(value, list) else bad


@pytest.mark.parametrize("choice,key,value", GROUP_NUMBERS, ids=[f"{c} {k}" for c, k, _ in GROUP_NUMBERS])
def test_every_group_number_refuses_nan(tmp_path, choice, key, value):
    message = refused(tmp_path, choice, *EXTRA.get(choice, []), f"{key}={_with(value, 'nan')}")
    where = f"{key}[0]" if isinstance(value, list) else key
    assert message == f"{where} must be a finite number, got nan"


@pytest.mark.parametrize("choice,key,value", [g for g in GROUP_NUMBERS if isinstance(g[2], float)][::2],
                         ids=[f"{c} {k}" for c, k, v in [g for g in GROUP_NUMBERS if isinstance(g[2], float)][::2]])
def test_group_floats_refuse_minus_inf(tmp_path, choice, key, value):
    assert refused(tmp_path, choice, *EXTRA.get(choice, []), f"{key}=-inf") == f"{key} must be a finite number, got -inf"


def test_group_numbers_cover_the_keys_the_issue_names():
    keys = {k for _, k, _ in GROUP_NUMBERS}
    assert {"target_sync.every", "target_sync.tau", "replay.sampler.alpha", "replay.sampler.beta",
            "agent.head.v_min", "agent.head.num_atoms", "optimizer.eps", "env.obs_bounds.low"} <= keys
    assert len(GROUP_NUMBERS) >= 20


@pytest.mark.parametrize("override,key", [
    ("env.kwargs.n=nan", "env.kwargs.n"),  # a keyword of the environment constructor
    ("env.kwargs.slip=inf", "env.kwargs.slip"),
])
def test_environment_kwargs_refuse_nan_and_inf(tmp_path, override, key):
    message = refused(tmp_path, "env=chain", f"+{override}" if "slip" in override else override)
    assert message.startswith(f"{key} must be a finite number, got ")


# -- integers numpy and torch cannot take --------------------------------------------------------------------
INT_TOP = [k for k, b in sorted(numeric_ranges().items()) if b["integer"] and k not in ("seed", "threads")]


@pytest.mark.parametrize("key", INT_TOP)
def test_top_level_integers_beyond_64_bits_are_refused(tmp_path, key):
    message = refused(tmp_path, f"{key}={2**63}")
    assert message == (f"{key} must be <= 2**63 - 1 = 9223372036854775807 (the largest 64-bit integer numpy and "
                       f"torch take), got {2**63}")


@pytest.mark.parametrize("override,message", [
    (f"seed={2**64}", f"seed must be <= 2**64 - 1 = 18446744073709551615 (64 bits), got {2**64}"),
    (f"threads={2**31}", f"threads must be <= 2**31 - 1 = 2147483647 (a C int), got {2**31}"),
])
def test_seed_and_threads_limits(tmp_path, override, message):
    assert refused(tmp_path, override) == message


@pytest.mark.parametrize("overrides,key,value", [
    (["target_sync=hard", f"target_sync.every={2**63}"], "target_sync.every", 2**63),
    (["target_sync=hard", f"target_sync.every={10**30}"], "target_sync.every", 10**30),
    (["env=chain", f"env.kwargs.n={-2**63 - 1}"], "env.kwargs.n", -2**63 - 1),
    (["agent=c51", f"agent.head.num_atoms={2**64}"], "agent.head.num_atoms", 2**64),
    (["replay/sampler=prioritized", f"replay.sampler.beta_updates={2**70}"], "replay.sampler.beta_updates", 2**70),
])
def test_group_integers_beyond_64_bits_are_refused(tmp_path, overrides, key, value):
    assert refused(tmp_path, *overrides) == (f"{key} must be an integer between -2**63 and 2**63 - 1 (what numpy "
                                             f"and torch take), got {value}")


def test_a_400_digit_integer_is_refused_not_overflowed(tmp_path):
    assert refused(tmp_path, f"total_steps={10**400}").startswith("total_steps must be <= 2**63 - 1")


# -- documented range edges work -------------------------------------------------------------------------------
EDGES = [
    ["gamma=0", "env.max_episode_steps=10"],  # crashed in the overestimation measure before (issue 12)
    ["gamma=1", "env.max_episode_steps=10"],
    ["gamma=0", "agent=qtable", "env=frozenlake", "env.max_episode_steps=3"],
    ["eps_decay_fraction=0"], ["eps_decay_steps=0"], ["eps_start=0", "eps_end=0"], ["eps_end=1"],
    ["eval_epsilon=1", "eval_every=100", "eval_episodes=1"], ["learning_starts=0"], ["learning_starts=300"],
    ["lr_end=0.0005"], ["max_grad_norm=0"], ["batch_size=500"], ["total_steps=1", "learning_starts=1"],
    [f"seed={2**64 - 1}"], ["replay/sampler=prioritized", "replay.sampler.alpha=0", "replay.sampler.beta=0"],
    ["target_sync.tau=1"], ["target_sync=hard", "target_sync.every=1"], ["n_step=3", "gamma=0"], ["log_every=1"],
]


@pytest.mark.parametrize("overrides", EDGES, ids=[" ".join(o) for o in EDGES])
def test_documented_range_edges_run(tmp_path, overrides):
    run = train(make_cfg(*RUN, *overrides), tmp_path / "run", "x")
    steps = dict(o.split("=", 1) for o in RUN + overrides)["total_steps"]
    assert run.state.step == int(steps)
    rows = read_rows(tmp_path / "run" / "metrics.csv")
    assert rows and int(rows[-1]["step"]) == int(steps)


def test_gamma_zero_with_a_time_limit_measures_every_state(tmp_path):
    """gamma=0: the rewards a time limit cuts off weigh 0, so every state of a cut episode is used and the
    Monte-Carlo return of each state is its own reward (hand-computed)."""
    out = value_estimate_vs_return([1.0, 2.0, 3.0], [1.0, 0.0, 1.0], gamma=0.0, cut=True)
    assert out == {"q_estimate": 2.0, "mc_return": 2.0 / 3.0}
    train(make_cfg(*RUN, "gamma=0", "env.max_episode_steps=10"), tmp_path / "run", "x")
    cut = [r for r in read_rows(tmp_path / "run" / "returns.csv") if r["truncated"] == "1"]
    assert cut and all(r["mc_return"] == "1.0" and math.isfinite(float(r["q_estimate"])) for r in cut)


# -- sizes that do not fit in memory ----------------------------------------------------------------------------
@pytest.mark.parametrize("n_step", [1, 3])
def test_bytes_needed_equals_what_the_storages_allocate(n_step):
    s = TransitionStorage(100, (4,), np.float32, 3, n_step=n_step)
    allocated = sum(getattr(s, k).numel() * getattr(s, k).element_size() for k in s._FIELDS)
    assert TransitionStorage.bytes_needed(100, (4,), np.float32, 3, n_step=n_step) == allocated == \
        3 * 100 * (2 * 16 + 16 + (4 if n_step > 1 else 0))
    f = FrameStorage(100, (4, 84, 84), np.uint8, 2, n_step=n_step)
    allocated = sum(getattr(f, k).numel() * getattr(f, k).element_size() for k in f._TENSORS) + \
        sum(getattr(f, k).nbytes for k in ("last", "first") + (("next_last",) if n_step > 1 else ()))
    assert FrameStorage.bytes_needed(100, (4, 84, 84), np.uint8, 2, n_step=n_step) == allocated


@pytest.fixture
def small_memory(monkeypatch):
    """100 MB of memory left, and no storage may be made: a refusal must come before allocation."""
    monkeypatch.setattr(rlzoo_train, "available_memory", lambda device: 100_000_000)
    made = []
    for cls in (TransitionStorage, FrameStorage):
        monkeypatch.setattr(cls, "__init__", lambda self, *a, **k: made.append(a) or pytest.fail("allocated"))
    return made


MEMORY = [
    (["buffer_size=1000000", "n_seeds=3"],
     "this run needs about 144.0 MB on cpu for the replay memory (buffer_size=1,000,000 x n_seeds=3 x 48 bytes per "
     "transition of CartPole-v1) but only 100.0 MB is available"),
    (["buffer_size=2100000"], "this run needs about 100.8 MB on cpu for the replay memory (buffer_size=2,100,000 x "
                              "n_seeds=1 x 48 bytes per transition of CartPole-v1)"),
    (["buffer_size=1000000", "n_seeds=2", "replay/sampler=prioritized"],
     "this run needs about 129.6 MB on cpu for the replay memory (buffer_size=1,000,000 x n_seeds=2 x 64 bytes"),  # + sum trees: 16 x 2**20 x 2
    (["buffer_size=1000000", "n_seeds=2", "n_step=3"], "this run needs about 104.0 MB on cpu for the replay memory "
                                                       "(buffer_size=1,000,000 x n_seeds=2 x 52 bytes"),
    (["n_seeds=1000000000000"], "this run needs about 24,000,000.0 GB on cpu for the replay memory (buffer_size=500 "
                                "x n_seeds=1,000,000,000,000 x 48 bytes"),
    (["agent=qtable", "agent.discretizer.bins=50", "n_seeds=2"],
     "this run needs about 200.0 MB on cpu for the replay memory (buffer_size=500 x n_seeds=2 x 48 bytes per "
     "transition of CartPole-v1) and the Q-table (n_seeds=2 x 6,250,000 states x 2 actions x 8 bytes) but only "
     "100.0 MB"),
    (["agent=double_qtable", "agent.discretizer.bins=[45,45,45,45]"],
     "this run needs about 131.2 MB on cpu for the replay memory (buffer_size=500 x n_seeds=1 x 48 bytes per "
     "transition of CartPole-v1) and the Q-tables (n_seeds=1 x 4,100,625 states x 2 actions x 8 bytes x 2 tables)"),
    (["agent=qtable", "env=frozenlake", "n_seeds=200000"],
     "and the Q-table (n_seeds=200,000 x 16 states x 4 actions x 8 bytes)"),
    (["env=atari", "env.id=ALE/Pong-v5", "replay=frames", "network=nature_cnn", "buffer_size=10000", "batch_size=32",
      "n_seeds=2"], "this run needs about 143.3 MB on cpu for the replay memory (buffer_size=10,000 x n_seeds=2 x "
                    "7,164 bytes per transition of ALE/Pong-v5)"),  # (10,000 + 100 + 8) x 84 x 84 + 32 per slot
]


@pytest.mark.parametrize("overrides,message", MEMORY, ids=[" ".join(o) for o, _ in MEMORY])
def test_sizes_beyond_memory_are_refused_before_allocation_with_the_estimate(tmp_path, small_memory, overrides,
                                                                            message):
    if "env=atari" in overrides:
        pytest.importorskip("ale_py")
    got = refused(tmp_path, *overrides)
    assert message in got and got.endswith("lower buffer_size or n_seeds (or agent.discretizer.bins)"), got
    assert not small_memory


def test_a_run_that_fits_is_not_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(rlzoo_train, "available_memory", lambda device: 48 * 500 + 1)
    assert train(make_cfg(*RUN), tmp_path / "run", "x").state.step == 300


def test_available_memory_reads_the_kernels_estimate():
    free = rlzoo_train.available_memory(rlzoo_train.torch.device("cpu"))
    with open("/proc/meminfo") as f:
        kernel = next(int(line.split()[1]) * 1024 for line in f if line.startswith("MemAvailable:"))
    assert 0 < free <= kernel * 1.5 and free >= kernel * 0.5


# -- discretiser lists of the wrong length -----------------------------------------------------------------------
DISCRETISER = [
    (["agent.discretizer.bins=[3,3]"], "agent.discretizer.bins has 2 entries but CartPole-v1's observations have 4 "
                                       "dimensions: give one whole number for all, or 4 of them"),
    (["agent.discretizer.bins=[3,3,3,3,3]"], "agent.discretizer.bins has 5 entries but CartPole-v1's observations "
                                             "have 4 dimensions"),
    (["agent.discretizer.bins=2.5"], "agent.discretizer.bins must be whole numbers >= 1 (one, or one per dimension), "
                                     "got 2.5"),
    (["agent.discretizer.bins=[3,3,0,3]"], "agent.discretizer.bins must be whole numbers >= 1 (one, or one per "
                                           "dimension), got [3, 3, 0, 3]"),
    (["agent.discretizer.low=[0,0]"], "agent.discretizer.low must be a list of 4 numbers, one per dimension of "
                                      "CartPole-v1's observations, got [0, 0]"),
    (["agent.discretizer.high=[1,1,1,1,1]"], "agent.discretizer.high must be a list of 4 numbers"),
    (["agent.discretizer.low=0"], "agent.discretizer.low must be a list of 4 numbers"),
    (["agent.discretizer.low=[0,0,nan,0]"], "agent.discretizer.low[2] must be a finite number, got nan"),
]


@pytest.mark.parametrize("overrides,message", DISCRETISER, ids=[" ".join(o) for o, _ in DISCRETISER])
def test_discretiser_lists_of_the_wrong_length(tmp_path, overrides, message):
    got = refused(tmp_path, "agent=qtable", *overrides)
    assert got.startswith(message), got


def count_tries() -> dict[str, int]:
    """Distinct hostile inputs in this file, by kind (docs/reliability.md quotes the total)."""
    floats = [g for g in GROUP_NUMBERS if isinstance(g[2], float)][::2]
    return {"non-finite": 3 * len(TOP) + len(GROUP_NUMBERS) + len(floats) + 2,
            "integers": len(INT_TOP) + 2 + 5 + 1, "edges": len(EDGES) + 1, "memory": len(MEMORY),
            "lists": len(DISCRETISER)}
