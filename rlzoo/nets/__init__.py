"""Population networks: parameters of P members stacked on a leading axis, ``[P, B, ...] -> [P, B, ...]``."""

from rlzoo.nets.heads import DuelingHead, QHead
from rlzoo.nets.layers import PopConv2d, PopLinear, member_generators
from rlzoo.nets.qnetwork import QNetwork
from rlzoo.nets.torsos import MLP, ConvTorso, MinAtarCNN, NatureCNN, ObservationEncoder

__all__ = ["MLP", "ConvTorso", "DuelingHead", "MinAtarCNN", "NatureCNN", "ObservationEncoder", "PopConv2d",
           "PopLinear", "QHead", "QNetwork", "member_generators"]
