"""Model files: the trained networks of a run's members, in safetensors format (no code runs on loading).

``<run dir>/models/final.safetensors`` holds every member's model at the end of the run, and
``<run dir>/models/best.safetensors`` every member's model at its best evaluation (the highest mean return
over an evaluation's episodes; the earliest such evaluation on ties). Each tensor carries the member axis
first (``[P, ...]``): member ``i`` is index ``i``, seeded with ``seed + i``. The header's metadata says,
per member, its seed, the step the model comes from and that evaluation's mean return (``best``).

A model is the part of an agent's ``state_dict()`` that acts: a deep agent's ``q_net`` (not its target
network or optimizer), a tabular agent's ``q`` table. ``load_into`` puts a model back into a freshly built
agent through its ``state_dict()`` / ``load_state_dict()``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Sequence

import torch

from rlzoo.errors import ConfigError

FORMAT, VERSION = "rlzoo-model", 1
KINDS = ("final", "best")
MODEL_KEYS = ("q_net", "q")  # the acting part of a DQNAgent's / TabularQAgent's state_dict()


class ModelError(ConfigError):
    """A model file that is missing or cannot be used, with what to do instead."""


def model_path(run_dir, kind: str = "final") -> Path:
    if kind not in KINDS:
        raise ModelError(f"model must be one of {', '.join(KINDS)}, got {kind!r}")
    return Path(run_dir) / "models" / f"{kind}.safetensors"


def _flatten(d: dict, prefix: str = "") -> dict[str, torch.Tensor]:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        elif isinstance(v, torch.Tensor):
            out[f"{prefix}{k}"] = v
    return out


def model_tensors(agent) -> dict[str, torch.Tensor]:
    """The agent's acting tensors, flat (``q_net.torso.layers.0.weight`` ...), each a CPU copy ``[P, ...]``."""
    state = agent.state_dict()
    for key in MODEL_KEYS:
        if key in state:
            part = state[key]
            flat = _flatten(part, f"{key}.") if isinstance(part, dict) else {key: part}
            return {k: v.detach().to("cpu", copy=True).contiguous() for k, v in flat.items()}
    raise ModelError(f"{type(agent).__name__}'s state_dict() has none of {MODEL_KEYS}: no model to save")


def save(path, tensors: dict[str, torch.Tensor], meta: dict) -> int:
    """Write ``tensors`` and ``meta`` (JSON in the header) atomically; returns the size in bytes."""
    from safetensors.torch import save as to_bytes
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    data = to_bytes({k: v.contiguous() for k, v in tensors.items()},
                    metadata={"format": FORMAT, "version": str(VERSION), "meta": json.dumps(meta)})
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)  # a kill while writing leaves the previous file intact
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path.stat().st_size


def load(path) -> tuple[dict[str, torch.Tensor], dict]:
    """``(tensors, meta)`` of a model file; a missing or unreadable file is a one-line ModelError."""
    from safetensors import SafetensorError, safe_open
    path = Path(path)
    if not path.exists():
        raise ModelError(f"{path} does not exist (runs save models/final.safetensors at their end, and "
                         "models/best.safetensors when they evaluate)")
    try:
        with safe_open(str(path), framework="pt") as f:
            header = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError) as e:
        raise ModelError(f"{path} is not a readable model file ({str(e).splitlines()[0][:160]})") from None
    if header.get("format") != FORMAT:
        raise ModelError(f"{path} is not an rlzoo model file")
    return tensors, json.loads(header.get("meta", "{}"))


def select_members(tensors: dict[str, torch.Tensor], members: Sequence[int]) -> dict[str, torch.Tensor]:
    """The tensors of the given members only (member axis first)."""
    index = torch.as_tensor(list(members), dtype=torch.long)
    return {k: v.index_select(0, index) for k, v in tensors.items()}


def load_into(agent, tensors: dict[str, torch.Tensor]) -> None:
    """Put model tensors (as ``model_tensors`` makes them, with the agent's population size) into ``agent``."""
    state = agent.state_dict()
    flat = {}
    for key in MODEL_KEYS:
        if key in state:
            part = state[key]
            flat = _flatten(part, f"{key}.") if isinstance(part, dict) else {key: part}
            break
    missing, extra = sorted(flat.keys() - tensors.keys()), sorted(tensors.keys() - flat.keys())
    if missing or extra:
        raise ModelError(f"the model file does not fit this agent (missing {missing[:3]}, unexpected {extra[:3]}): "
                         "was the run's config changed?")
    for k, target in flat.items():
        if tuple(target.shape) != tuple(tensors[k].shape):
            raise ModelError(f"the model's {k} has shape {tuple(tensors[k].shape)}, the agent's "
                             f"{tuple(target.shape)}: was the run's config changed?")
        with torch.no_grad():
            target.copy_(tensors[k])  # in place: the agent's views of its parameters stay valid
    if "target_net" in state and "q_net" in state:  # a deep agent: its target network follows (unused to act)
        for k, v in state["target_net"].items():
            if isinstance(v, torch.Tensor) and f"q_net.{k}" in tensors:
                with torch.no_grad():
                    v.copy_(tensors[f"q_net.{k}"])


class ModelSaver:
    """Saves a run's models: ``final()`` at the end, ``evaluated(step, means)`` after every evaluation keeps
    each member's best model (written when some member improves). A resumed run continues from the best
    file already in the run directory."""

    def __init__(self, run_dir, agent, seeds: Sequence[int], identity: dict | None = None, resume: bool = False):
        self.run_dir, self.agent, self.seeds = Path(run_dir), agent, [int(s) for s in seeds]
        self.identity = dict(identity or {})
        P = len(self.seeds)
        self.best_tensors: dict[str, torch.Tensor] | None = None
        self.best_mean = [float("-inf")] * P
        self.best_step = [None] * P
        self.written: list[Path] = []
        best = model_path(self.run_dir, "best")
        if resume and best.exists():
            tensors, meta = load(best)
            if meta.get("seeds") == self.seeds:
                self.best_tensors = tensors
                self.best_mean = [float("-inf") if m is None else float(m) for m in meta["eval_mean"]]
                self.best_step = list(meta["steps"])
                self.written.append(best)

    def _meta(self, kind: str, steps, means=None) -> dict:
        meta = {**self.identity, "kind": kind, "seeds": self.seeds, "steps": list(steps)}
        if means is not None:
            meta["eval_mean"] = [None if m == float("-inf") else m for m in means]
        return meta

    def evaluated(self, step: int, member_means: Sequence[float]) -> None:
        improved = [i for i, m in enumerate(member_means) if m > self.best_mean[i]]
        if not improved:
            return
        current = model_tensors(self.agent)
        if self.best_tensors is None:
            self.best_tensors = {k: v.clone() for k, v in current.items()}
        for i in improved:
            self.best_mean[i], self.best_step[i] = float(member_means[i]), int(step)
            for k, v in current.items():
                self.best_tensors[k][i] = v[i]
        path = model_path(self.run_dir, "best")
        save(path, self.best_tensors, self._meta("best", self.best_step, self.best_mean))
        if path not in self.written:
            self.written.append(path)

    def final(self, step: int) -> Path:
        path = model_path(self.run_dir, "final")
        save(path, model_tensors(self.agent), self._meta("final", [int(step)] * len(self.seeds)))
        if path not in self.written:
            self.written.insert(0, path)
        return path
