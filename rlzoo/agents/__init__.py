"""Agents: a tabular Q-learner and the DQN family (one class; variants differ by component)."""
