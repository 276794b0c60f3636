import torch

from rlzoo.nets import MLP, DuelingHead, ObservationEncoder, PopLinear, QHead, QNetwork, member_generators


def build(seeds, dueling=False):
    gens = member_generators(seeds)
    torso = MLP((4,), gens, hidden_sizes=(16, 8))
    head = DuelingHead(8, 3, gens) if dueling else QHead(8, 3, gens)
    return QNetwork(ObservationEncoder((4,)), torso, head)


def test_poplinear_matches_per_member_linear():
    gens = member_generators([3, 4])
    layer = PopLinear(5, 2, gens)
    x = torch.randn(2, 7, 5)
    out = layer(x)
    for i in range(2):
        ref = x[i] @ layer.weight[i].T + layer.bias[i, 0]
        assert torch.allclose(out[i], ref, atol=1e-6)


def test_dueling_identity():
    net = build([0, 1], dueling=True)
    obs = torch.randn(2, 5, 4)
    features = net.torso(net.encoder(obs))
    v, a = net.head.streams(features)
    q = net(obs)
    assert q.shape == (2, 5, 3)
    assert torch.allclose(q, v + a - a.mean(dim=-1, keepdim=True), atol=1e-6)
    # the mean advantage is removed: the mean over actions of Q equals V
    assert torch.allclose(q.mean(dim=-1, keepdim=True), v, atol=1e-6)


def test_member_i_initialises_like_a_solo_run_with_seed_plus_i():
    pop = build([10, 11, 12], dueling=True)
    solo = build([11], dueling=True)
    for (name, p_pop), (_, p_solo) in zip(pop.named_parameters(), solo.named_parameters()):
        assert torch.equal(p_pop[1], p_solo[0]), name
    obs = torch.randn(1, 4, 4)
    assert torch.allclose(pop(obs.expand(3, -1, -1))[1], solo(obs)[0], atol=1e-6)


def test_members_differ():
    pop = build([0, 1])
    assert not torch.equal(pop.head.q.weight[0], pop.head.q.weight[1])


def test_one_hot_encoder_for_discrete_states():
    enc = ObservationEncoder((), num_states=5)
    out = enc(torch.tensor([[1, 4]]))
    assert out.shape == (1, 2, 5)
    assert out[0, 0].tolist() == [0, 1, 0, 0, 0] and out[0, 1].tolist() == [0, 0, 0, 0, 1]
