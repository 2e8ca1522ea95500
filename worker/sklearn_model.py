"""The scikit-learn implementation of `shared.model.Model`."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Self

import joblib
import numpy as np
import numpy.typing as npt
from sklearn.ensemble import RandomForestRegressor

Matrix = npt.NDArray[np.float64]


class SklearnModel:
    """A scikit-learn regressor behind the article's train / predict / save / load interface."""

    def __init__(self, estimator: Any | None = None) -> None:
        self.estimator = (
            estimator
            if estimator is not None
            else RandomForestRegressor(n_estimators=100, random_state=0)
        )

    @property
    def n_features(self) -> int:
        """Columns the fitted estimator expects."""
        return int(self.estimator.n_features_in_)

    def train(self, X: Matrix, y: Matrix) -> Self:
        """Fit the estimator."""
        self.estimator.fit(X, y)
        return self

    def predict(self, X: Matrix) -> Matrix:
        """One float per row."""
        return np.asarray(self.estimator.predict(X), dtype=np.float64)

    def save(self, path: Path) -> None:
        """Dump the estimator with joblib."""
        joblib.dump(self.estimator, path)

    @classmethod
    def load(cls, path: Path) -> Self:
        """Load an estimator dumped by `save`; only call it on a verified file."""
        return cls(joblib.load(path))
