"""The top-level run settings as a structured config: the schema of conf/config.yaml.

Hydra checks each top-level value against ``RunConfig`` while it composes the config (the command line, the
group options, an experiment), so a value of the wrong type (``seed=abc``, ``lr=fast``, ``resume=maybe``,
``n_seeds=2.5``) stops before any code of rlzoo runs; ``type_error`` turns OmegaConf's report into one sentence.
conf/config.yaml holds the defaults and says what each key means; every field here is filled from it.

The groups (agent, env, network, replay, target_sync, optimizer) are ``Any``: each is a ``_target_`` whose
class or function checks its own arguments. What a type cannot say (ranges, finite floats, the keys that must
agree) is checked by ``rlzoo.train.validate``, from the range recorded with each field.

Importing this module registers the schema (``rlzoo.train`` imports it, so does everything that composes
through it). A sweep's joblib workers receive Hydra's ConfigStore from the parent process.
"""

import math
import typing
from dataclasses import dataclass, field, fields
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING
from omegaconf.errors import ValidationError

SCHEMA = "rlzoo_schema"  # the name conf/config.yaml's defaults list gives the schema
INT64_MAX = 2**63 - 1  # the largest integer numpy's and torch's int64 take: the bound of every integer setting


def _setting(low=None, high=None, low_open: bool = False):
    """A field that conf/config.yaml fills, with the range ``train.validate`` checks: ``low <= value``
    (``low < value`` if ``low_open``) and ``value <= high``; None: no bound."""
    return field(default=MISSING, metadata={"low": low, "high": high, "low_open": low_open})


@dataclass
class RunConfig:
    seed: int = _setting(low=0, high=2**64 - 1)  # torch.manual_seed takes 64 bits
    n_seeds: int = _setting(low=1)
    total_steps: int = _setting(low=1)
    learning_starts: int = _setting(low=0)  # and <= total_steps; 0: learn from the first train_freq-th step
    train_freq: int = _setting(low=1)
    gradient_steps: int = _setting(low=1)
    gamma: float = _setting(low=0, high=1)
    n_step: int = _setting(low=1)  # and the first learner update at step >= n_step
    lr: float = _setting(low=0, low_open=True)
    lr_end: Optional[float] = _setting(low=0)  # and <= lr
    batch_size: int = _setting(low=1)
    buffer_size: int = _setting(low=1)
    loss: str = _setting()  # 'huber' or 'mse'. Text, not an Enum: ${loss} hands the agent a plain string
    max_grad_norm: Optional[float] = _setting(low=0)
    eps_start: float = _setting(low=0, high=1)
    eps_end: float = _setting(low=0, high=1)
    eps_decay_fraction: float = _setting(low=0, high=1)
    eps_decay_steps: Optional[int] = _setting(low=0)
    eval_every: int = _setting(low=0)
    eval_episodes: int = _setting(low=1)
    eval_epsilon: float = _setting(low=0, high=1)
    log_q_estimates: bool = _setting()
    log_every: int = _setting(low=1)
    device: str = _setting()  # auto, cpu or cuda[:N]
    threads: int = _setting(low=0, high=2**31 - 1)  # torch.set_num_threads takes a C int
    fast_path: bool = _setting()
    progress: bool = _setting()
    checkpoint_every: int = _setting(low=0)
    resume: bool = _setting()
    nan_check: bool = _setting()
    tensorboard: bool = _setting()
    agent: Any = MISSING
    env: Any = MISSING
    network: Any = MISSING
    replay: Any = MISSING
    target_sync: Any = MISSING
    optimizer: Any = MISSING
    policy_evaluation: Any = None  # set: evaluate a fixed policy (rlzoo.policy_evaluation; +experiment=dueling_corridor)


ConfigStore.instance().store(name=SCHEMA, node=RunConfig)


def _base_type(tp) -> tuple[type, bool]:
    """``Optional[X]`` -> (X, True); X -> (X, False)."""
    args = typing.get_args(tp)
    if typing.get_origin(tp) is typing.Union and type(None) in args:
        return next(a for a in args if a is not type(None)), True
    return tp, False


SETTINGS = {f.name: _base_type(f.type) for f in fields(RunConfig) if f.type is not Any}  # name -> (type, nullable)


def numeric_ranges() -> dict[str, dict]:
    """Each numeric setting's bounds, as ``train._num`` takes them: {name: {integer, low, high, low_open}}.
    An integer setting without a high bound of its own is bounded by ``INT64_MAX``."""
    out = {}
    for f in fields(RunConfig):
        if f.name in SETTINGS and SETTINGS[f.name][0] in (int, float):
            integer = SETTINGS[f.name][0] is int
            bounds = dict(f.metadata)
            if integer and bounds.get("high") is None:
                bounds["high"] = INT64_MAX
            out[f.name] = {"integer": integer, **bounds}
    return out


_KINDS = {int: "a whole number", float: "a number", bool: "true or false", str: "text"}


def _shown(value) -> str:
    """A value as the user wrote it on the command line or in YAML."""
    if isinstance(value, bool):
        return str(value).lower()
    return "null" if value is None else repr(value)


def type_error(error: BaseException) -> Optional[str]:
    """The one sentence for a top-level value of the wrong type: OmegaConf's ValidationError, raised itself
    (e.g. by an interpolation resolved late) or as the cause of Hydra's ConfigCompositionException.
    None for every other error."""
    while error is not None and not isinstance(error, ValidationError):
        error = error.__cause__
    if error is None or getattr(error, "full_key", None) not in SETTINGS:
        return None
    key, value = error.full_key, getattr(error, "value", None)
    kind, nullable = SETTINGS[key]
    expected = _KINDS.get(kind, kind.__name__) + (" or null" if nullable else "")
    if kind is int and isinstance(value, float) and math.isfinite(value) and value.is_integer():
        # 1e6 and 1000000.0 are floats to Hydra's parser
        return f"{key} must be {expected} written in digits, e.g. {key}={int(value)}, got the decimal number {value!r}"
    return f"{key} must be {expected}, got {_shown(value)}"
