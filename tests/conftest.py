"""Shared helpers: compose the real Hydra configs and train in-process."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from rlzoo.train import CONF_DIR


def make_cfg(*overrides: str):
    with initialize_config_dir(CONF_DIR, version_base="1.3"):
        return compose("config", overrides=list(overrides))


def read_rows(path: Path, drop=("time", "sps")) -> list[dict]:
    with open(path, newline="") as f:
        return [{k: v for k, v in row.items() if k not in drop} for row in csv.DictReader(f)]


@pytest.fixture
def cfg_factory():
    return make_cfg
