"""The report's MinAtar claims (Young and Tian 2019): replay and the target network (``+experiment=minatar_ablation``)
and Double DQN's overestimation measured against the greedy policy's own return (``+experiment=overestimation_minatar``
with ``agent=double_dqn``, analysed together with the ablation's full DQN runs, which have the same settings).

``analysis.report`` imports :func:`report_claims` (a plug-in: see its module doc). Each MinAtar game is a stratum of
its own: the effects average the games' differences, each in its own game's score units.

    python -m analysis.report results/reference --claims minatar_experience_replay minatar_target_network \\
        minatar_replay_vs_target double_overestimation_minatar --out /tmp/minatar_report
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from analysis.common import save_figure  # noqa: E402
from analysis.report import (Arm, Comparison, _standard_dqn, _with_replay, _with_target, _without_target,  # noqa: E402
                             curves_figure, final_return, is_minatar)
from analysis.summary import LAST_EVALS, last_eval_gaps  # noqa: E402

YOUNG_TIAN = ("Young and Tian 2019, MinAtar: An Atari-Inspired Testbed for Thorough and Reproducible Reinforcement "
              "Learning Experiments (section 5, Figure 2: DQN with and without experience replay and a target "
              "network)")
TESTBED = ("MinAtar Breakout and Space Invaders (10x10 frames with 4 and 6 channels, 6 actions), "
           "`+experiment=minatar_ablation`: the paper's DQN settings at the budget of `+experiment=minatar_short` "
           "(100k frames instead of 5M, epsilon decayed over 50k frames instead of 100k, one update every 4 "
           "frames instead of every frame, 5 seeds); each game (and each setting of the other ablated part) is a stratum")

WHY_REPLAY = ("Why the testbeds may differ: CartPole's state is 4 numbers and an episode's transitions vary "
              "smoothly, so the last 64 transitions already cover what the network needs; MinAtar's frames come in "
              "long, strongly correlated streams from a policy that changes as it learns, which is what a large "
              "memory decorrelates (Young and Tian found replay the more important ingredient on MinAtar). The "
              "budgets also differ: 50k CartPole steps against MinAtar runs of 2-3% of the paper's 5M frames.")
WHY_TARGET = ("Why the testbeds may differ: on CartPole, DQN without a target network diverged on every seed "
              "(mean Q-values near 10^10), while MinAtar's rewards are sparse and small, its learning rate smaller "
              "(2.5e-4 against 2.3e-3) and its budget short, so a moving target may not have time to blow up; "
              "Young and Tian found the target network to matter much less than replay on MinAtar.")
WHY_OVER = ("Why the testbeds may differ: CartPole has 2 actions and deterministic rewards, so the maximum in "
            "the target has little noise to pick from, and its measure there is on training episodes, which "
            "mix in exploration; MinAtar's games have 6 actions, and the measure is on greedy evaluation "
            "episodes.")


def _no_replay(identity: dict[str, str]) -> bool:
    return not _with_replay(identity)


def eval_overestimation(df: pd.DataFrame) -> pd.DataFrame:
    """Per seed: ``q_estimate - mc_return`` over the evaluation episodes of its last LAST_EVALS evaluations."""
    return last_eval_gaps(df, LAST_EVALS).rename(columns={"gap": "score"})[["env", "label", "unit", "score"]]


def eval_estimate(df: pd.DataFrame) -> pd.DataFrame:
    return last_eval_gaps(df, LAST_EVALS).rename(columns={"q_estimate": "score"})[["env", "label", "unit", "score"]]


def eval_return(df: pd.DataFrame) -> pd.DataFrame:
    return last_eval_gaps(df, LAST_EVALS).rename(columns={"mc_return": "score"})[["env", "label", "unit", "score"]]


def eval_overestimation_figure(df: pd.DataFrame, out: Path, colours: dict[str, str]) -> list[Path]:
    """plot_overestimation on the greedy evaluation episodes (estimate and the greedy policy's own return, and
    their gap), and the evaluation returns beside it."""
    from analysis.plot_overestimation import plot_overestimation
    fig, _ = plot_overestimation(df, n_boot=500, colours=colours, phase="eval")
    paths = save_figure(fig, out, ("png",))
    plt.close(fig)
    return paths + curves_figure(df, Path(f"{out}_returns"), colours)


def report_claims() -> list:
    final = (("final return", final_return, 1),)
    return [
        Comparison(
            key="minatar_experience_replay", title="Experience replay makes DQN learn on MinAtar",
            statement="Learning from a large replay memory, rather than from the last batch of transitions, "
                      "decorrelates the updates; without it DQN ends lower.",
            paper=YOUNG_TIAN, testbed=TESTBED,
            agents="DQN with a replay memory of 100,000 vs DQN whose memory holds one batch (buffer_size = "
                   "batch_size = 32, the paper's --replayoff), with and without a target network",
            metric=f"final return (each seed's mean over its last {LAST_EVALS} greedy evaluations)",
            figure_text="evaluation returns over training", short="final return",
            baseline=Arm("no replay", ("dqn",), _no_replay), treatment=Arm("replay", ("dqn",), _with_replay),
            sign=+1, differ=("buffer_size", "replay"), envs=is_minatar, contrast=("experience_replay", WHY_REPLAY)),
        Comparison(
            key="minatar_target_network", title="The target network helps DQN on MinAtar",
            statement="Without a target network the TD target moves with every update; with it, DQN ends higher.",
            paper=YOUNG_TIAN, testbed=TESTBED,
            agents="DQN whose target network is copied every 1,000 frames vs DQN whose target is the online "
                   "network (target_sync.every=1, the paper's --targetoff), with and without replay",
            metric=f"final return (each seed's mean over its last {LAST_EVALS} greedy evaluations)",
            figure_text="evaluation returns over training", short="final return",
            baseline=Arm("no target network", ("dqn",), _without_target),
            treatment=Arm("target network", ("dqn",), _with_target),
            sign=+1, differ=("target_sync",), envs=is_minatar, contrast=("target_network", WHY_TARGET)),
        Comparison(
            key="minatar_replay_vs_target", title="On MinAtar, replay matters more than the target network",
            statement="Young and Tian found that removing replay costs DQN much more than removing the target "
                      "network: DQN without a target network (replay kept) ends higher than DQN without replay "
                      "(target kept).",
            paper=YOUNG_TIAN, testbed=TESTBED,
            agents="DQN without a target network (replay kept) vs DQN without replay (target network kept)",
            metric=f"final return (each seed's mean over its last {LAST_EVALS} greedy evaluations)",
            figure_text="evaluation returns over training", short="final return",
            baseline=Arm("no replay (target kept)", ("dqn",), lambda i: _no_replay(i) and _with_target(i)),
            treatment=Arm("no target network (replay kept)", ("dqn",),
                          lambda i: _with_replay(i) and _without_target(i)),
            sign=+1, differ=("buffer_size", "replay", "target_sync"), envs=is_minatar),
        Comparison(
            key="double_overestimation_minatar", title="Double DQN overestimates less on MinAtar",
            statement="The max in Q-learning's target overestimates action values, the more so with more actions; "
                      "Double DQN's target brings the greedy policy's value estimates closer to the return it "
                      "actually gets.",
            paper="van Hasselt, Guez and Silver 2016, Deep Reinforcement Learning with Double Q-learning "
                  "(section 5, Figure 3)",
            testbed="MinAtar Breakout and Space Invaders (6 actions), the settings of `+experiment=minatar_short` "
                    "(100k frames, 5 seeds): Double DQN from `+experiment=overestimation_minatar agent=double_dqn`, "
                    "DQN from the full-DQN runs of `+experiment=minatar_ablation`; each game is a stratum",
            agents="Double DQN vs DQN",
            metric=f"overestimation of the greedy policy: per seed, the mean over the evaluation episodes of its "
                   f"last {LAST_EVALS} evaluations of q_estimate (the mean of max_a Q(s, a) over the episode's "
                   "states) minus mc_return (the discounted return the greedy policy got from those states)",
            figure_text="value estimate and the greedy policy's discounted return at each evaluation, their gap, "
                        "and the evaluation returns",
            short="overestimation (greedy)",
            baseline=Arm("DQN", ("dqn",), _standard_dqn), treatment=Arm("Double DQN", ("double_dqn",), _standard_dqn),
            sign=-1, differ=("agent",), envs=is_minatar, metric_fn=eval_overestimation,
            figure=eval_overestimation_figure, digits=3,
            extras=(("estimate", eval_estimate, 3), ("greedy discounted return", eval_return, 3),
                    *final), contrast=("double_overestimation", WHY_OVER)),
    ]
