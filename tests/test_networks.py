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


def _numpy_and_torch(net, obs):
    with torch.no_grad():
        return net.np_forward(obs.numpy()), net(obs).numpy()


def test_numpy_forward_matches_torch_forward():
    gens = member_generators([0, 1, 2])
    nets = [build([0, 1, 2]), build([0, 1, 2], dueling=True),
            QNetwork(ObservationEncoder((4,)), MLP((4,), gens, (16,)), DuelingHead(16, 3, gens, hidden=8))]
    obs = torch.randn(3, 5, 4)
    for net in nets:
        assert net.supports_numpy
        np_q, torch_q = _numpy_and_torch(net, obs)
        assert np_q.shape == (3, 5, 3) and np_q.dtype == torch_q.dtype
        assert abs(np_q - torch_q).max() < 1e-5
        assert not (np_q == 0).all()


def test_numpy_forward_one_hot_and_scaled_encoders():
    gens = member_generators([0])
    net = QNetwork(ObservationEncoder((), num_states=6), MLP((6,), gens, (8,)), QHead(8, 4, gens))
    states = torch.tensor([[0, 5, 3]])
    np_q, torch_q = _numpy_and_torch(net, states)
    assert abs(np_q - torch_q).max() < 1e-6
    net = QNetwork(ObservationEncoder((2, 3), scale=255.0), MLP((6,), gens, (8,)), QHead(8, 4, gens))
    pixels = torch.randint(0, 256, (1, 2, 2, 3), dtype=torch.uint8)
    np_q, torch_q = _numpy_and_torch(net, pixels)
    assert abs(np_q - torch_q).max() < 1e-6


def test_numpy_forward_follows_parameter_updates_and_loads():
    net = build([0])
    obs = torch.randn(1, 2, 4)
    before, _ = _numpy_and_torch(net, obs)
    opt = torch.optim.SGD(net.parameters(), lr=0.5)
    net(obs).sum().backward()
    opt.step()  # in place: the cached numpy views see the new values
    after, torch_after = _numpy_and_torch(net, obs)
    assert abs(after - before).max() > 1e-3 and abs(after - torch_after).max() < 1e-5
    other = build([7])
    net.load_state_dict(other.state_dict())
    loaded, torch_loaded = _numpy_and_torch(net, obs)
    assert abs(loaded - torch_loaded).max() < 1e-5 and abs(loaded - after).max() > 1e-3
    for p in net.parameters():  # replaced storage (as a device move does): the views are rebuilt
        p.data = p.data.clone() * 2
    replaced, torch_replaced = _numpy_and_torch(net, obs)
    assert abs(replaced - torch_replaced).max() < 1e-5 and abs(replaced - loaded).max() > 1e-3


def test_cnn_networks_have_no_numpy_forward():
    from rlzoo.nets import MinAtarCNN
    gens = member_generators([0])
    net = QNetwork(ObservationEncoder((4, 10, 10), flatten=False), MinAtarCNN((4, 10, 10), gens), QHead(128, 3, gens))
    assert not net.supports_numpy


def test_copies_carry_no_cached_numpy_views_and_views_follow_shared_memory():
    """PopLinear caches numpy views of its parameters. Moving the parameters to shared memory frees the
    memory those views show: the cache must rebuild, and a deep copy must not read or carry it."""
    import copy

    net = MLP((4,), member_generators([0, 1]), hidden_sizes=(8,))
    x = torch.randn(2, 3, 4)
    net.np_forward(x.numpy())  # fills the caches
    for p in net.parameters():
        p.data.share_memory_()
    clone = copy.deepcopy(net)
    assert not any("_np_views" in m.__dict__ for m in clone.modules())
    with torch.no_grad():
        for m in (net, clone):
            torch.testing.assert_close(torch.from_numpy(m.np_forward(x.numpy())), m(x), rtol=1e-6, atol=1e-6)
