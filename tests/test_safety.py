"""Safety: checkpoints are read without executing code; non-finite losses stop the run with a useful message."""

from __future__ import annotations

import dataclasses
import pickle

import numpy as np
import pytest
import torch

from rlzoo import loop
from rlzoo.io import checkpoint
from rlzoo.guards import NonFiniteError, check_finite
from rlzoo.train import build
from conftest import make_cfg


class Exploit:
    """Unpickling this calls ``open(marker, "w")``: arbitrary code, as a crafted checkpoint would carry."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.mark.parametrize("how", ["torch.save", "raw pickle"])
def test_a_crafted_pickle_is_refused_and_never_runs(tmp_path, how):
    marker = tmp_path / "pwned"
    path = tmp_path / checkpoint.FILENAME
    payload = {"format": checkpoint.FORMAT, "version": checkpoint.VERSION, "step": 1, "meta": Exploit(marker)}
    if how == "torch.save":
        torch.save(payload, path)
    else:
        path.write_bytes(pickle.dumps(payload))
    # Plain pickle would run it (the danger being guarded against) ...
    if how == "raw pickle":
        pickle.loads(path.read_bytes())
        assert marker.exists()
        marker.unlink()
    # ... rlzoo refuses it.
    with pytest.raises(checkpoint.CheckpointError, match="refused|not a readable checkpoint"):
        checkpoint.read(path)
    assert not marker.exists()


def test_a_plain_tensor_file_that_is_not_a_checkpoint_is_refused(tmp_path):
    torch.save({"weights": torch.zeros(3)}, tmp_path / "x.pt")
    with pytest.raises(checkpoint.CheckpointError, match="not an rlzoo checkpoint"):
        checkpoint.read(tmp_path / "x.pt")


def test_plain_containers_round_trip_through_weights_only_load(tmp_path):
    rng = np.random.default_rng(3)
    rng.random()
    value = {"a": np.arange(5, dtype=np.int64), "b": [np.float32(1.5), None, (1, "x")], "g": rng,
             "t": torch.arange(10)[2:5], "big": 2 ** 100}
    torch.save(checkpoint.to_plain(value), tmp_path / "v.pt")
    back = checkpoint.from_plain(torch.load(tmp_path / "v.pt", weights_only=True))
    np.testing.assert_array_equal(back["a"], value["a"])
    assert back["b"] == [1.5, None, (1, "x")] and back["big"] == 2 ** 100
    assert back["g"].random() == rng.random()
    assert torch.equal(back["t"], torch.tensor([2, 3, 4])) and back["t"].untyped_storage().nbytes() == 3 * 8


def test_check_finite_names_member_step_and_cause():
    check_finite({"loss": torch.tensor([0.1, 2.0]), "q_mean": torch.tensor([1.0, 3.0])}, 10, [7, 8])
    with pytest.raises(NonFiniteError, match=r"loss of member 1 \(seed 8\) became nan at step 42.*learning rate"):
        check_finite({"loss": torch.tensor([0.1, float("nan")]), "q_mean": torch.tensor([1.0, 3.0])}, 42, [7, 8])
    with pytest.raises(NonFiniteError, match=r"Q-value of member 0 \(seed 7\) became inf"):
        check_finite({"loss": torch.tensor([0.1, 0.2]), "q_mean": torch.tensor([float("inf"), 3.0])}, 5, [7, 8])


def run_poisoned(tmp_path, nan_check: bool):
    """A DQN population whose member 1 has a NaN weight from the start."""
    cfg = make_cfg("n_seeds=2", "total_steps=300", "learning_starts=100", "eval_every=0", "log_every=100",
                   "progress=false", "checkpoint_every=0")
    parts = build(cfg, tmp_path, "dqn")
    with torch.no_grad():
        next(parts.agent.q_net.parameters())[1].fill_(float("nan"))
    parts.settings = dataclasses.replace(parts.settings, nan_check=nan_check)
    try:
        return loop.run(parts)
    finally:
        parts.close()


def test_a_nan_loss_stops_the_run_at_the_first_update(tmp_path):
    with pytest.raises(NonFiniteError, match=r"member 1 \(seed 1\) became nan at step 100:"):
        run_poisoned(tmp_path / "on", nan_check=True)
    # Rows written before the stop stay; with the check off the run writes the nonsense it is asked to.
    state = run_poisoned(tmp_path / "off", nan_check=False)
    assert state.step == 300 and torch.isnan(state.metrics["loss"][1])


def test_large_uint8_stores_are_compressed_and_round_trip(tmp_path, monkeypatch):
    monkeypatch.setattr(checkpoint, "COMPRESS_BYTES", 1000)
    frames = torch.zeros((2, 50, 84, 84), dtype=torch.uint8)
    frames[1, 7, 10:20, 30:40] = 200  # a mostly blank screen, as in a pixel replay
    plain = checkpoint.to_plain({"frames": frames, "small": torch.ones(10, dtype=torch.uint8)})
    assert "__zlib__" in plain["frames"] and isinstance(plain["small"], torch.Tensor)
    checkpoint.write_atomic(plain, tmp_path / "c.pt")
    assert (tmp_path / "c.pt").stat().st_size < frames.numel() / 20
    back = checkpoint.from_plain(torch.load(tmp_path / "c.pt", weights_only=True))
    assert torch.equal(back["frames"], frames)
