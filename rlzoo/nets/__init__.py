"""Population networks: parameters of P members stacked on a leading axis."""

from rlzoo.nets.networks import (MLP, ConvTorso, DuelingHead, MinAtarCNN, NatureCNN, ObservationEncoder,
                                 PopConv2d, PopLinear, QHead, QNetwork, member_generators)

__all__ = ["MLP", "ConvTorso", "DuelingHead", "MinAtarCNN", "NatureCNN", "ObservationEncoder", "PopConv2d",
           "PopLinear", "QHead", "QNetwork", "member_generators"]
