"""The demo model and the 1-row cases (row, expected prediction) every load benchmark sends."""

from __future__ import annotations

import json
from pathlib import Path

from sklearn.datasets import load_diabetes

from shared.registry import Registry
from worker.sklearn_model import SklearnModel
from worker.train import train_demo


def write_cases(work: Path) -> Path:
    """Train the demo model under `work/models` and write `work/cases.json`: every diabetes row
    with the model's own prediction for it (the load generators check each answer against it)."""
    info = train_demo(Registry(work / "models", "demo"), "demo")
    model = SklearnModel.load(work / "models" / "demo" / info.version / info.artifact, fast=False)
    X, _ = load_diabetes(return_X_y=True)
    expected = model.estimator.predict(X)
    cases = work / "cases.json"
    pairs = zip(X, expected, strict=True)
    cases.write_text(json.dumps([[row.tolist(), float(y)] for row, y in pairs]))
    return cases
