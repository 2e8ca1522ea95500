"""Fixtures for both tiers: a registry holding a really trained demo model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from sklearn.datasets import load_diabetes

from shared.registry import Registry
from shared.schemas import ModelInfo
from worker.train import train_demo


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model registry with version 1 of the demo model (trained once per session)."""
    root = tmp_path_factory.mktemp("models")
    train_demo(Registry(root, "demo"), "demo")
    return root


@pytest.fixture(scope="session")
def demo_info(model_dir: Path) -> ModelInfo:
    """The demo model's manifest."""
    return Registry(model_dir, "demo").resolve("default")


@pytest.fixture(scope="session")
def diabetes_rows() -> list[list[float]]:
    """Real feature rows of the diabetes data set."""
    X, _ = load_diabetes(return_X_y=True)
    return [[float(v) for v in row] for row in np.asarray(X)]
