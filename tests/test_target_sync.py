import pytest
import torch

from rlzoo.nets import MLP, member_generators
from rlzoo.target_sync import EnvStepHardSync, HardSync, SoftSync


def nets():
    online = MLP((3,), member_generators([0, 1]), hidden_sizes=(4,))
    target = MLP((3,), member_generators([5, 6]), hidden_sizes=(4,))
    return online, target


def same(a, b):
    return all(torch.equal(x, y) for x, y in zip(a.parameters(), b.parameters()))


def test_hard_sync_copies_exactly_every_c_updates():
    online, target = nets()
    sync = HardSync(every=3)
    copied = []
    for updates in range(1, 10):
        with torch.no_grad():
            for p in online.parameters():
                p.add_(1.0)  # the online network moves after every update
        did = sync(online, target, updates)
        copied.append(did)
        assert same(online, target) == did
    assert copied == [False, False, True, False, False, True, False, False, True]


def test_soft_sync_moves_each_parameter_by_tau():
    online, target = nets()
    before = [p.clone() for p in target.parameters()]
    SoftSync(tau=0.1)(online, target, 1)
    for b, o, t in zip(before, online.parameters(), target.parameters()):
        assert torch.allclose(t, b + 0.1 * (o - b), atol=1e-7)


def test_soft_sync_tau_one_is_a_copy():
    online, target = nets()
    SoftSync(tau=1.0)(online, target, 1)
    assert same(online, target)


def test_env_step_sync_copies_when_a_multiple_is_passed():
    """every=10, updates at steps 4, 8, ..., 40 (train_freq=4): a multiple of 10 lies in (last, step] at
    steps 12 (10), 20, 32 (30) and 40; nothing is done after an update."""
    online, target = nets()
    sync = EnvStepHardSync(every=10)
    copied, last = [], 0
    for step in range(4, 44, 4):
        with torch.no_grad():
            for p in online.parameters():
                p.add_(1.0)
        did = sync.before_update(online, target, last, step)
        last = step
        assert same(online, target) == did
        assert sync(online, target, step) is False
        copied.append(step) if did else None
    assert copied == [12, 20, 32, 40]


@pytest.mark.parametrize("make", [lambda: EnvStepHardSync(every=0), lambda: HardSync(every=0), lambda: SoftSync(tau=0.0), lambda: SoftSync(tau=1.5)])
def test_bad_values_rejected(make):
    with pytest.raises(ValueError):
        make()
