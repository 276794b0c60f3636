"""Hostile use of checkpoints (issue 12, categories 2 and 3): checkpoints of other members, agents,
environments or devices; crafted tensors of the wrong shape or dtype; loop counters that disagree with the CSV
rows; truncated or edited CSVs; settings changed on resume. Each try asserts the exact outcome: a one-line
``CheckpointError`` naming what differs with every result file left unchanged, or rows bit-identical to a
run that was never stopped.

Every run is in-process: one straight CartPole run and one killed between checkpoints (module fixtures),
copied for each try."""

from __future__ import annotations

import json
import shutil
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from omegaconf import OmegaConf

from analysis.load import EXECUTION_KEYS
from rlzoo import loop, sweeps
from rlzoo.io import checkpoint
from rlzoo.replay.frames import FrameStorage
from rlzoo.replay.nstep import NStepWriter
from rlzoo.replay.storage import TransitionStorage
from rlzoo.train import CONF_DIR, train
from conftest import make_cfg, read_rows

ARGS = ["total_steps=600", "learning_starts=100", "eval_every=300", "eval_episodes=1", "log_every=50",
        "checkpoint_every=300", "n_seeds=2", "buffer_size=1000", "batch_size=32", "progress=false", "device=cpu"]
FILES = ("returns.csv", "metrics.csv", checkpoint.FILENAME)


class Killed(Exception):
    pass


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """``straight``: a run never stopped; ``killed``: the same run killed at step 450, with its checkpoint at step
    300 and CSV rows after it."""
    root = tmp_path_factory.mktemp("runs")
    train(make_cfg(*ARGS), root / "straight", "dqn")

    def crash(metrics, step, seeds):
        if step >= 450:
            raise Killed
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(loop, "check_finite", crash)
        with pytest.raises(Killed):
            train(make_cfg(*ARGS), root / "killed", "dqn")
    assert checkpoint.read(root / "killed" / checkpoint.FILENAME)["step"] == 300
    return root


@pytest.fixture
def killed(runs, tmp_path):
    shutil.copytree(runs / "killed", tmp_path / "run")
    return tmp_path / "run"


def snapshot(run_dir: Path) -> dict:
    return {name: (run_dir / name).read_bytes() for name in FILES}


def refused(run_dir: Path, *extra: str, agent: str = "dqn", args=ARGS) -> str:
    """Resume with ``extra`` overrides; it must fail with a one-line CheckpointError and change no file."""
    before = snapshot(run_dir)
    with pytest.raises(checkpoint.CheckpointError) as e:
        train(make_cfg(*args, *extra, "resume=true"), run_dir, agent)
    message = str(e.value)
    assert "\n" not in message
    assert snapshot(run_dir) == before
    return message


def craft(run_dir: Path, edit_run=None, edit_meta=None, step=None) -> None:
    """Rewrite the checkpoint with its run state and/or meta edited in place (as a hostile user would)."""
    path = run_dir / checkpoint.FILENAME
    payload = checkpoint.read(path)
    if edit_run is not None:
        state = checkpoint.from_plain(payload["run"])
        edit_run(state)
        payload["run"] = checkpoint.to_plain(state)
    if edit_meta is not None:
        meta = json.loads(payload["meta"])
        edit_meta(meta)
        payload["meta"] = json.dumps(meta)
    if step is not None:
        payload["step"] = step
    torch.save(payload, path)


def same_rows(a: Path, b: Path) -> None:
    for name in ("returns.csv", "metrics.csv"):
        rows_a, rows_b = read_rows(a / name), read_rows(b / name)
        assert len(rows_a) > 10 and rows_a == rows_b, name


def recount(meta: dict, run_dir: Path, name: str) -> None:
    """Make the checkpoint's recorded position of ``name`` cover the whole file as it is now."""
    data = (run_dir / name).read_bytes()
    meta["csv"][name] = {"bytes": len(data), "crc32": zlib.crc32(data)}


# -- 1. identity: members, agent, environment, device ------------------------------------------------------------
@pytest.mark.parametrize("extra,expected", [
    (["n_seeds=3"], "is for seeds [0, 1], this run has [0, 1, 2]: use seed=0 n_seeds=2"),
    (["n_seeds=1"], "is for seeds [0, 1], this run has [0]"),
    (["seed=1"], "is for seeds [0, 1], this run has [1, 2]"),
    (["seed=5", "n_seeds=3"], "is for seeds [0, 1], this run has [5, 6, 7]"),
    (["env=gym", "env.id=Acrobot-v1"], "is for environment CartPole-v1, this run has Acrobot-v1"),
], ids=["more-members", "fewer-members", "shifted-seeds", "other-seeds", "other-env"])
def test_a_checkpoint_of_other_members_or_env_is_refused(killed, extra, expected):
    message = refused(killed, *extra)
    assert expected in message and "hydra.run.dir" in message


def test_a_checkpoint_of_another_agent_is_refused(killed):
    message = refused(killed, "agent=double_dqn", agent="double_dqn")
    assert "is for agent dqn, this run has double_dqn: use agent=dqn" in message


@pytest.mark.parametrize("key,value,expected", [
    ("seeds", [7, 8], "is for seeds [7, 8], this run has [0, 1]"),
    ("agent", "c51", "is for agent c51, this run has dqn"),
    ("env", "MountainCar-v0", "is for environment MountainCar-v0, this run has CartPole-v1"),
    ("device", "cuda", "is for device type cuda, this run has cpu: resume on a cuda device"),
], ids=["seeds", "agent", "env", "device"])
def test_an_edited_identity_block_is_refused(killed, key, value, expected):
    craft(killed, edit_meta=lambda m: m["identity"].__setitem__(key, value))
    assert expected in refused(killed)


@pytest.mark.parametrize("edit,expected", [
    (lambda m: m.__setitem__("identity", [0, 1]), "has a malformed header (AttributeError"),
    (lambda m: m.pop("csv"), "has a malformed header (KeyError: 'csv')"),
    (lambda m: m["identity"].__setitem__("seeds", 3), "is for seeds 3, this run has [0, 1]"),
], ids=["identity-a-list", "no-csv-positions", "seeds-a-number"])
def test_a_malformed_header_is_refused_in_one_line(killed, edit, expected):
    craft(killed, edit_meta=edit)
    assert expected in refused(killed)


def test_a_sweep_job_refuses_a_checkpoint_of_other_members(killed):
    craft(killed, edit_meta=lambda m: m["identity"].__setitem__("seeds", [3, 4]))
    config = OmegaConf.to_container(make_cfg(*ARGS), resolve=True)
    with pytest.raises(checkpoint.CheckpointError, match=r"is for seeds \[3, 4\], this run has \[0, 1\]"):
        sweeps.job_state(killed, config)


# -- 2. shapes and dtypes of every saved array ----------------------------------------------------------------------
def _set(path: str, make):
    """An edit of the run state: the value at the dotted ``path`` becomes ``make(old value)``."""
    def edit(state):
        *parents, last = path.split(".")
        node = state
        for p in parents:
            node = node[int(p)] if isinstance(node, list) else node[p]
        key = int(last) if isinstance(node, list) else last
        node[key] = make(node[key])
    return edit


def _first_weight(state) -> str:
    return next(k for k in state["agent"]["q_net"] if k.endswith("weight"))


@pytest.mark.parametrize("path,make,expected", [
    ("replay.storage.obs", lambda x: x[..., :3], "replay.storage.obs has shape [2, 300, 3] (float32) in the "
     "checkpoint, this run's has shape [2, any, 4] (float32)"),
    ("replay.storage.obs", lambda x: x[:1], "replay.storage.obs has shape [1, 300, 4] (float32)"),  # no broadcast
    ("replay.storage.next_obs", lambda x: x.double(), "replay.storage.next_obs has shape [2, 300, 4] (float64)"),
    ("replay.storage.action", lambda x: x.int(), "replay.storage.action has shape [2, 300] (int32)"),
    ("replay.storage.reward", lambda x: x[:, :-1], "replay.storage.reward has shape [2, 299] (float32) in the "
     "checkpoint, expected [2, 300]"),  # the storage's own check: filled slots vs size
    ("replay.storage.size", lambda x: 5000, "size=5000, pos=300 in the checkpoint, which a storage of capacity 1000"),
    ("replay.sampler.rngs", lambda x: x[:1], "replay.sampler.rngs has 1 entries in the checkpoint, this run's has 2"),
    ("envs.state", lambda x: np.zeros((2, 5)), "envs.state has shape [2, 5] (float64) in the checkpoint, this run's "
     "has shape [2, 4] (float64)"),
    ("envs.elapsed", lambda x: x.astype(np.float64), "envs.elapsed has shape [2] (float64)"),
    ("envs.rngs", lambda x: x[:1], "envs.rngs has 1 entries in the checkpoint, this run's has 2"),
    ("replay.storage.obs", lambda x: 0, "replay.storage.obs is int in the checkpoint, this run's is an array"),
], ids=["obs-last-axis", "obs-one-member", "next_obs-dtype", "action-dtype", "reward-vs-size", "size-beyond-capacity",
        "sampler-members", "env-state-shape", "env-elapsed-dtype", "env-rngs-members", "obs-not-an-array"])
def test_a_saved_array_of_another_shape_or_dtype_is_refused(killed, path, make, expected):
    craft(killed, edit_run=_set(path, make))
    message = refused(killed)
    assert "does not fit this run" in message and expected in message, message


@pytest.mark.parametrize("net,make,expected", [
    ("q_net", lambda x: x[:, :-1], "has shape [2, 255, 4] (float32) in the checkpoint, this run's has shape [2, 256, 4]"),
    ("q_net", lambda x: x.double(), "(float64) in the checkpoint, this run's has shape [2, 256, 4] (float32)"),
    ("target_net", lambda x: x[:1], "has shape [1, 256, 4] (float32) in the checkpoint, this run's has shape [2, 256, 4]"),
], ids=["q_net-rows", "q_net-dtype", "target_net-one-member"])
def test_a_network_weight_of_another_shape_or_dtype_is_refused(killed, net, make, expected):
    state = checkpoint.from_plain(checkpoint.read(killed / checkpoint.FILENAME)["run"])
    key = _first_weight(state)
    assert list(state["agent"][net][key].shape) == [2, 256, 4]
    craft(killed, edit_run=lambda s: s["agent"][net].__setitem__(key, make(s["agent"][net][key])))
    message = refused(killed)
    assert f"agent.{net}.{key} " in message and expected in message, message


@pytest.mark.parametrize("make,expected", [
    (lambda x: x[:, :-1], "agent.optimizer.state.0.exp_avg has shape [2, 255, 4] (float32) in the checkpoint, its "
     "parameter has shape [2, 256, 4] (float32)"),
    (lambda x: x.double(), "agent.optimizer.state.0.exp_avg has shape [2, 256, 4] (float64)"),
], ids=["moment-shape", "moment-dtype"])
def test_optimizer_state_of_another_shape_or_dtype_is_refused(killed, make, expected):
    craft(killed, edit_run=lambda s: s["agent"]["optimizer"]["state"][0].__setitem__(
        "exp_avg", make(s["agent"]["optimizer"]["state"][0]["exp_avg"])))
    assert expected in refused(killed)


@pytest.mark.parametrize("part,expected", [
    ("target_net", "the checkpoint has no agent.target_net, which this run has"),
    ("lr_scheduler", "the checkpoint has no agent.lr_scheduler, which this run has"),
], ids=["target_net", "lr_scheduler"])
def test_a_missing_part_is_refused(killed, part, expected):
    craft(killed, edit_run=lambda s: s["agent"].pop(part))
    assert expected in refused(killed)


# -- 3. loop counters against the CSV rows ----------------------------------------------------------------------
def _bump(key: str, member: int, by: int):
    def edit(state):
        state["loop"][key][member] += by
    return edit


@pytest.mark.parametrize("key,member,by,phase", [("episodes", 1, 1, "train"), ("episodes", 0, -1, "train"),
                                                 ("eval_episodes", 0, 1, "eval"), ("eval_episodes", 1, -1, "eval")],
                         ids=["train+1", "train-1", "eval+1", "eval-1"])
def test_loop_counters_that_disagree_with_returns_csv_are_refused(killed, key, member, by, phase):
    counted = checkpoint.from_plain(checkpoint.read(killed / checkpoint.FILENAME)["run"]["loop"])[key][member]
    rows = sum(1 for r in read_rows(killed / "returns.csv") if r["phase"] == phase and r["seed"] == str(member)
               and int(r["step"]) <= 300)
    assert counted == rows > 0
    craft(killed, edit_run=_bump(key, member, by))
    assert (f"counts {counted + by} {phase} episodes of seed {member} but returns.csv holds {rows} up to it"
            in refused(killed))


def test_counters_for_another_number_of_members_are_refused(killed):
    craft(killed, edit_run=_set("loop.episodes", lambda x: np.append(x, 0)))
    assert "counts train episodes for 3 members but is for seeds [0, 1]" in refused(killed)


def test_a_loop_state_at_another_step_than_its_label_is_refused(killed):
    craft(killed, edit_run=_set("loop.step", lambda x: x + 1))
    assert "is labelled step 300 but its loop state is at step 301" in refused(killed)


def test_rows_after_the_checkpoint_inside_its_recorded_position_are_refused(killed):
    """The recorded position made to cover rows written after the checkpoint (by a killed run)."""
    craft(killed, edit_meta=lambda m: recount(m, killed, "metrics.csv"))
    assert "after the checkpoint's step 300, yet within the bytes it counts as written" in refused(killed)


def test_rows_of_another_seed_are_refused(killed):
    lines = (killed / "returns.csv").read_text().splitlines(keepends=True)
    i = next(i for i, line in enumerate(lines) if line.startswith("dqn,CartPole-v1,0,"))
    lines[i] = lines[i].replace("CartPole-v1,0,", "CartPole-v1,9,", 1)
    (killed / "returns.csv").write_text("".join(lines))
    craft(killed, edit_meta=lambda m: recount(m, killed, "returns.csv"))
    assert f"returns.csv line {i + 1} is a row of seed 9, but the checkpoint's members are seeds [0, 1]" in refused(killed)


def test_a_repeated_row_before_the_checkpoint_is_refused(killed):
    lines = (killed / "returns.csv").read_text().splitlines(keepends=True)
    lines.insert(2, lines[1])
    (killed / "returns.csv").write_text("".join(lines))
    craft(killed, edit_meta=lambda m: recount(m, killed, "returns.csv"))
    assert "returns.csv line 3 is train episode 1 of seed" in refused(killed)


def test_a_garbled_row_before_the_checkpoint_is_refused(killed):
    lines = (killed / "metrics.csv").read_text().splitlines(keepends=True)
    lines[3] = "x,y,zero,step\n"
    (killed / "metrics.csv").write_text("".join(lines))
    craft(killed, edit_meta=lambda m: recount(m, killed, "metrics.csv"))
    assert "metrics.csv line 4 is not a row rlzoo wrote (seed='zero'" in refused(killed)


@pytest.mark.parametrize("name", ["returns.csv", "metrics.csv"])
def test_a_csv_truncated_before_the_checkpoint_is_refused(killed, name):
    held = json.loads(checkpoint.read(killed / checkpoint.FILENAME)["meta"])["csv"][name]["bytes"]
    data = (killed / name).read_bytes()
    (killed / name).write_bytes(data[:held - 10])
    assert f"has {held - 10} bytes but held {held} at the checkpoint (step 300)" in refused(killed)


@pytest.mark.parametrize("name", ["returns.csv", "metrics.csv"])
def test_a_csv_edited_before_the_checkpoint_is_refused(killed, name):
    data = bytearray((killed / name).read_bytes())
    i = data.index(b"\n", 200) - 1
    data[i] = ord("7") if data[i] != ord("7") else ord("8")
    (killed / name).write_bytes(bytes(data))
    assert "differ from what was written before the checkpoint (step 300): the file was edited" in refused(killed)


def test_a_stale_checkpoint_of_a_finished_run_with_all_its_rows_is_refused(runs, tmp_path):
    """A finished run's CSVs with the checkpoint of step 300 copied in (rows up to 600 counted as written)."""
    run_dir = tmp_path / "run"
    shutil.copytree(runs / "straight", run_dir)
    shutil.copy(runs / "killed" / checkpoint.FILENAME, run_dir / checkpoint.FILENAME)
    craft(run_dir, edit_meta=lambda m: (recount(m, run_dir, "returns.csv"), recount(m, run_dir, "metrics.csv")))
    assert "after the checkpoint's step 300" in refused(run_dir)


# -- 4. settings: refused when they change numbers, bit-identical when they may change ----------------------------
@pytest.mark.parametrize("override,original", [
    ("threads=2", "threads=1"), ("fast_path=false", "fast_path=True"), ("lr=0.001", "lr=0.0005"),
    ("gamma=0.9", "gamma=0.99"), ("total_steps=900", "total_steps=600"), ("buffer_size=500", "buffer_size=1000"),
    ("batch_size=64", "batch_size=32"), ("eps_end=0.1", "eps_end=0.04"), ("log_every=100", "log_every=50"),
    ("eval_every=200", "eval_every=300"), ("max_grad_norm=5.0", "max_grad_norm=10.0"), ("loss=mse", "loss='huber'"),
    ("target_sync=hard", "target_sync._target_="), ("optimizer=rmsprop", "optimizer._target_="),
], ids=lambda v: v.split("=")[0] if "=" in str(v) else None)
def test_a_setting_that_changes_numbers_is_refused_on_resume(killed, override, original):
    message = refused(killed, override)
    assert "which this command changes" in message and original in message, message


MAY_CHANGE = [["checkpoint_every=0"], ["checkpoint_every=250"], ["checkpoint_every=1000"], ["progress=true"],
              ["nan_check=false"], ["tensorboard=true"], ["device=auto"]]


@pytest.mark.parametrize("extra", [pytest.param(e, marks=pytest.mark.skipif(
    "device=auto" in e and torch.cuda.is_available(), reason="auto is cuda here")) for e in MAY_CHANGE],
    ids=["ckpt-0", "ckpt-250", "ckpt-1000", "progress", "nan_check", "tensorboard", "device-auto"])
def test_a_setting_that_may_change_on_resume_gives_bit_identical_rows(runs, killed, extra):
    """RESUME_MAY_CHANGE: the resumed run writes the rows of the straight run, and its final checkpoint matches
    the CSVs (complete for a sweep) whatever checkpoint_every is now."""
    if "tensorboard=true" in extra:
        pytest.importorskip("tensorboard")
    resumed = train(make_cfg(*ARGS, *extra, "resume=true"), killed, "dqn")
    same_rows(runs / "straight", killed)
    final = checkpoint.read(killed / checkpoint.FILENAME)
    assert final["step"] == 600 == resumed.state.step
    assert sweeps.csvs_match(killed, json.loads(final["meta"])["csv"])
    config = OmegaConf.to_container(make_cfg(*ARGS), resolve=True)
    assert sweeps.job_state(killed, config) == sweeps.COMPLETE


def test_sweep_names_and_labels_agree_with_resume_may_change():
    """A setting that changes numbers is kept in sweep directory names and analysis labels."""
    conf = yaml.safe_load(Path(CONF_DIR, "config.yaml").read_text())
    excluded = set(conf["hydra"]["job"]["config"]["override_dirname"]["exclude_keys"])
    numbers = {"threads", "fast_path", "device"}
    assert not excluded & numbers and not EXECUTION_KEYS & numbers
    assert "threads" not in checkpoint.RESUME_MAY_CHANGE and "fast_path" not in checkpoint.RESUME_MAY_CHANGE
    # total_steps is refused on resume and left out of directory names: a sweep re-run with another budget is
    # refused per job (the config check), never mixed.
    assert excluded - set(checkpoint.RESUME_MAY_CHANGE) == {"total_steps"}
    # Every key a resumed run may change is tried by the bit-for-bit test above (resume is the switch itself).
    tried = {e.split("=")[0] for extra in MAY_CHANGE for e in extra}
    assert set(checkpoint.RESUME_MAY_CHANGE) == tried | {"resume"}


# -- 5. replay memories store their filled part ----------------------------------------------------------------
def _fill(storage, steps: int, obs_shape, rng, done_every: int = 7):
    P = storage.population
    obs = rng.integers(0, 255, size=(P, *obs_shape)).astype(np.uint8 if len(obs_shape) == 3 else np.float32)
    for t in range(steps):
        nxt = obs.copy()
        if len(obs_shape) == 3:
            nxt[:, :-1], nxt[:, -1] = obs[:, 1:], rng.integers(0, 255, size=(P, *obs_shape[1:]))
        else:
            nxt = rng.normal(size=(P, *obs_shape)).astype(np.float32)
        done = np.array([(t + i) % done_every == 0 for i in range(P)])
        storage.add(obs, rng.integers(0, 3, size=P), rng.normal(size=P), nxt, done, np.zeros(P, dtype=bool))
        obs = np.where(done[:, None, None, None] if len(obs_shape) == 3 else done[:, None],
                       np.zeros_like(nxt), nxt)


@pytest.mark.parametrize("kind,n_step,steps", [("transitions", 1, 37), ("transitions", 3, 37), ("transitions", 1, 130),
                                               ("frames", 1, 37), ("frames", 2, 37), ("frames", 1, 130)],
                         ids=["uniform-part", "nstep-part", "uniform-wrapped", "frames-part", "frames-nstep-part",
                              "frames-wrapped"])
def test_a_storage_saves_its_filled_part_and_restores_bit_for_bit(kind, n_step, steps):
    shape = (4,) if kind == "transitions" else (4, 6, 6)
    make = (lambda: TransitionStorage(100, shape, np.float32, 2, n_step=n_step)) if kind == "transitions" else \
        (lambda: FrameStorage(100, shape, np.uint8, 2, n_step=n_step))
    a = make()
    _fill(a, steps, shape, np.random.default_rng(0))
    state = checkpoint.from_plain(checkpoint.to_plain(a.state_dict()))
    filled = min(len(a) if kind == "transitions" else a.added, 100)
    assert state["action"].shape[1] == filled and filled == min(steps - n_step + 1, 100)
    if kind == "frames":
        assert state["frames"].shape[1] == min(int(a.frames_written.max()), a.frame_capacity)
    b = make()
    b.load_state_dict(state)
    for key in (("obs", "next_obs") if kind == "transitions" else ("frames",)) + ("action", "reward", "terminated"):
        assert torch.equal(getattr(a, key), getattr(b, key)), key  # the whole allocation, unwritten zeros included
    idx = np.stack([np.arange(0, len(a), 3)] * 2)
    assert all(torch.equal(x, y) for x, y in zip(a.gather(idx)[:5], b.gather(idx)[:5]))
    # Both go on identically.
    _fill(a, 20, shape, np.random.default_rng(1))
    _fill(b, 20, shape, np.random.default_rng(1))
    assert all(torch.equal(x, y) for x, y in zip(a.gather(idx)[:5], b.gather(idx)[:5]))


def test_a_version_4_whole_allocation_still_loads():
    a = TransitionStorage(50, (3,), np.float32, 2)
    _fill(a, 11, (3,), np.random.default_rng(2))
    whole = {k: getattr(a, k) for k in a._FIELDS} | {"pos": a.pos, "size": a.size}
    b = TransitionStorage(50, (3,), np.float32, 2)
    b.load_state_dict(whole)
    assert torch.equal(a.obs, b.obs) and b.size == 11


@pytest.mark.parametrize("edit,expected", [
    (lambda s: s.__setitem__("frames", s["frames"][:, :-1]), "replay.storage.frames has shape"),
    (lambda s: s.__setitem__("last", s["last"][:1]), "replay.storage.last has shape [1, 20]"),
    (lambda s: s.__setitem__("pending", s["pending"][:1]), "1 pending entries"),
    (lambda s: s.__setitem__("oldest", np.zeros(3, dtype=np.int64)), "replay.storage.oldest has shape [3]"),
], ids=["frames-short", "last-one-member", "pending-one-member", "oldest-three-members"])
def test_a_frame_storage_refuses_a_state_of_another_shape(edit, expected):
    a = FrameStorage(100, (4, 6, 6), np.uint8, 2)
    _fill(a, 20, (4, 6, 6), np.random.default_rng(3))
    state = a.state_dict()
    edit(state)
    with pytest.raises(ValueError, match=expected.replace("[", r"\[").replace("]", r"\]")):
        FrameStorage(100, (4, 6, 6), np.uint8, 2).load_state_dict(state)


@pytest.mark.parametrize("field,value,expected", [
    ("rewards", np.zeros((3, 1)), r"nstep.rewards has shape \[3, 1\]"),
    ("first", {"obs": np.zeros((3, 1, 4))}, r"nstep.first.obs has shape \[3, 1, 4\].*expected \[3, 2, ...\]"),
], ids=["rewards-one-member", "window-one-member"])
def test_an_nstep_window_of_another_shape_is_refused(field, value, expected):
    w = NStepWriter(3, 0.9, 2)
    state = w.state_dict()
    state[field] = value
    with pytest.raises(ValueError, match=expected):
        NStepWriter(3, 0.9, 2).load_state_dict(state)
