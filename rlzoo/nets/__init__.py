"""Population networks: parameters of P members stacked on a leading axis, ``[P, B, ...] -> [P, B, ...]``."""

from rlzoo.nets.heads import CategoricalHead, DuelingCategoricalHead, DuelingHead, QHead, make_head
from rlzoo.nets.layers import PopConv2d, PopLinear, PopNoisyLinear, member_generators
from rlzoo.nets.qnetwork import QNetwork
from rlzoo.nets.torsos import MLP, ConvTorso, MinAtarCNN, NatureCNN, ObservationEncoder

__all__ = ["MLP", "CategoricalHead", "ConvTorso", "DuelingCategoricalHead", "DuelingHead", "MinAtarCNN", "NatureCNN",
           "ObservationEncoder", "PopConv2d", "PopLinear", "PopNoisyLinear", "QHead", "QNetwork", "make_head", "member_generators"]
