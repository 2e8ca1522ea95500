"""Test-only estimators, pickled into a registry and imported by the real worker process.

The worker runs with the repository root as its working directory, so `tests.integration.models`
is importable there. Each predicts the sum of every row, so results are easy to check.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import joblib
import numpy as np
from celery.exceptions import SoftTimeLimitExceeded

from shared.registry import MANIFEST, sha256_file
from shared.schemas import ModelInfo

N_FEATURES = 10


class Sleepy:
    """Sleeps `seconds` before predicting; appends its pid to `pidfile` at each call."""

    n_features_in_ = N_FEATURES

    def __init__(self, seconds: float, pidfile: str = "", ignore_soft_limit: bool = False) -> None:
        self.seconds = seconds
        self.pidfile = pidfile
        self.ignore_soft_limit = ignore_soft_limit

    def predict(self, X: Any) -> Any:
        if self.pidfile:
            with Path(self.pidfile).open("a") as calls:
                calls.write(f"{os.getpid()}\n")
        deadline = time.monotonic() + self.seconds
        while time.monotonic() < deadline:
            try:
                time.sleep(0.05)
            except SoftTimeLimitExceeded:
                if not self.ignore_soft_limit:
                    raise
        return np.asarray(X, dtype=np.float64).sum(axis=1)


class Tally:
    """Predicts row sums and appends, per call, the tags (first feature) of tagged rows
    (>= `TAG_BASE`) and the first tag and size of untagged ones to `logfile`: the HA drill counts
    duplicate executions from it."""

    n_features_in_ = N_FEATURES
    TAG_BASE = 1_000_000

    def __init__(self, logfile: str) -> None:
        self.logfile = logfile

    def predict(self, X: Any) -> Any:
        X = np.asarray(X, dtype=np.float64)
        tags = X[:, 0] if len(X) else X
        tagged = tags[tags >= self.TAG_BASE]
        lines = [f"j {int(t)}" for t in tagged]
        if len(tagged) < len(tags):
            rest = tags[tags < self.TAG_BASE]
            lines.append(f"c {int(rest[0])} {len(rest)}")
        with Path(self.logfile).open("a") as log:
            log.write("".join(line + "\n" for line in lines))
        return X.sum(axis=1)


class Exploding:
    """Raises on every prediction: a poison model."""

    n_features_in_ = N_FEATURES

    def predict(self, X: Any) -> Any:
        raise ValueError("boom: this model always fails")


def add_model(root: Path, name: str, estimator: object, version: str = "1") -> Path:
    """Write `estimator` as `name:version` with a correct manifest; returns the artifact path."""
    folder = root / name / version
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    artifact = folder / "model.joblib"
    joblib.dump(estimator, artifact)
    info = ModelInfo(
        name=name,
        version=version,
        created_at=datetime.now(UTC),
        feature_names=[f"f{i}" for i in range(N_FEATURES)],
        n_features=N_FEATURES,
        framework_version="test",
        estimator=type(estimator).__name__,
        metrics={},
        sha256=sha256_file(artifact),
    )
    (folder / MANIFEST).write_text(json.dumps(info.model_dump(mode="json")))
    return artifact


def row_sums(rows: list[list[float]]) -> list[float]:
    """What these models predict for `rows`."""
    return [float(v) for v in np.asarray(rows, dtype=np.float64).sum(axis=1)]
