"""rlzoo: fair, fast comparisons of value-based deep reinforcement learning algorithms."""

__version__ = "0.1.0"
