import torch

from rlzoo.targets import double_dqn_target, dqn_target, td_target


def test_dqn_target_hand_computed():
    # ARCHITECTURE.md example: r=[1,0], terminated=[0,1], gamma=0.9, q_next=[[2,3],[5,4]] -> [3.7, 0.0]
    r = torch.tensor([[1.0, 0.0]])
    term = torch.tensor([[0.0, 1.0]])
    q_next = torch.tensor([[[2.0, 3.0], [5.0, 4.0]]])
    y = dqn_target(r, term, 0.9, q_next)
    assert torch.allclose(y, torch.tensor([[3.7, 0.0]]))


def test_double_dqn_selects_with_online_evaluates_with_target():
    r = torch.tensor([[1.0, 0.5]])
    term = torch.tensor([[0.0, 0.0]])
    q_target = torch.tensor([[[2.0, 3.0], [5.0, 4.0]]])
    q_online = torch.tensor([[[9.0, 1.0], [0.0, 7.0]]])  # online argmax: a=0 for row 0, a=1 for row 1
    y = double_dqn_target(r, term, 0.9, q_target, q_online)
    # row 0: 1 + 0.9 * Q_target[0] = 1 + 1.8 = 2.8; row 1: 0.5 + 0.9 * Q_target[1] = 0.5 + 3.6 = 4.1
    assert torch.allclose(y, torch.tensor([[2.8, 4.1]]))
    # plain DQN would take the max of the target: [1 + 2.7, 0.5 + 4.5]
    assert torch.allclose(dqn_target(r, term, 0.9, q_target), torch.tensor([[3.7, 5.0]]))


def test_population_axis_is_independent():
    r = torch.tensor([[1.0], [2.0]])
    term = torch.tensor([[0.0], [1.0]])
    q_next = torch.tensor([[[1.0, 4.0]], [[10.0, 20.0]]])
    assert torch.allclose(dqn_target(r, term, 0.5, q_next), torch.tensor([[3.0], [2.0]]))


def test_td_target_terminated_dtype_bool():
    y = td_target(torch.tensor([1.0, 1.0]), torch.tensor([True, False]), 0.5, torch.tensor([4.0, 4.0]))
    assert torch.allclose(y, torch.tensor([1.0, 3.0]))
