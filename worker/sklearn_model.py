"""The scikit-learn implementation of `shared.model.Model`."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any, Self

import joblib
import numpy as np
import numpy.typing as npt
from sklearn.ensemble import ExtraTreesRegressor, RandomForestRegressor

from shared.errors import ModelError, ModelRejected
from shared.registry import SKOPS_SUFFIX
from worker import skops_format
from worker.forest_kernel import CompiledForest, compile_forest

Matrix = npt.NDArray[np.float64]


class SklearnModel:
    """A scikit-learn regressor behind the article's train / predict / save / load interface."""

    def __init__(self, estimator: Any | None = None, fast: bool = True) -> None:
        self.estimator = (
            estimator
            if estimator is not None
            else RandomForestRegressor(n_estimators=100, random_state=0)
        )
        self.fast = fast
        self._compiled: CompiledForest | None = None  # built on first use, after any `train`

    @property
    def n_features(self) -> int:
        """Columns the fitted estimator expects."""
        return int(self.estimator.n_features_in_)

    def train(self, X: Matrix, y: Matrix) -> Self:
        """Fit the estimator."""
        self.estimator.fit(X, y)
        self._compiled = None
        return self

    def predict(self, X: Matrix) -> Matrix:
        """One float per row."""
        if self.fast and _tree_by_tree(self.estimator):
            X32 = np.ascontiguousarray(X, dtype=np.float32)
            if np.isnan(X32).any():  # NaN follows each node's learnt side: scikit-learn's walk
                return _forest_predict(self.estimator, X32)
            return self.compiled_forest().predict(X32)
        return np.asarray(self.estimator.predict(X), dtype=np.float64)

    def compiled_forest(self) -> CompiledForest:
        """The forest flattened for `worker.forest_kernel`; call it to pay its build at load."""
        if self._compiled is None:
            self._compiled = compile_forest(self.estimator)
        return self._compiled

    def save(self, path: Path) -> None:
        """Write the estimator: in the skops format for a `.skops` path, else with joblib."""
        if path.suffix == SKOPS_SUFFIX:
            path.write_bytes(skops_format.dump(self.estimator))
        else:
            joblib.dump(self.estimator, path)

    @classmethod
    def load(cls, path: Path, fast: bool = True) -> Self:
        """Load an estimator dumped by `save`; only call it on a verified file."""
        return cls.from_bytes(path.read_bytes(), fast=fast)

    @classmethod
    def from_bytes(cls, data: bytes, fast: bool = True) -> Self:
        """Load an estimator from the bytes of a file written by `save` (verified bytes only).

        A skops file (a zip archive) is loaded with its trusted types only; anything else is a
        joblib pickle. The registry refuses a `.skops` artifact that is not a zip archive, so a
        file named as skops never reaches pickle.
        """
        if skops_format.is_skops(data):
            try:
                model = cls(skops_format.load(data), fast=fast)
            except ModelRejected as exc:  # at serving time: the artifact cannot be trusted
                raise ModelError(exc.message, **exc.details) from exc
        else:
            model = cls(joblib.load(io.BytesIO(data)), fast=fast)
        if fast and _tree_by_tree(model.estimator):
            model.compiled_forest()  # the model is loaded once per process: so is this
        return model


def _tree_by_tree(estimator: Any) -> bool:
    # Exactly the forests whose `predict` is a sequential float64 sum of per-tree float32
    # predictions divided by the tree count; anything else keeps scikit-learn's own path.
    return (
        type(estimator) in (RandomForestRegressor, ExtraTreesRegressor)
        and estimator.n_outputs_ == 1
        and estimator.n_jobs in (None, 1)
    )


def _forest_predict(forest: Any, X: npt.NDArray[np.floating[Any]]) -> Matrix:
    """`forest.predict(X)` bit for bit, without its per-call joblib dispatch (3 ms -> 0.25 ms);
    for inputs with NaN, which the compiled walk leaves to scikit-learn.

    scikit-learn casts X to float32, adds each tree's prediction into a float64 accumulator in
    tree order (one job: no thread interleaving), then divides by the number of trees; so do we.
    """
    X32 = np.ascontiguousarray(X, dtype=np.float32)
    total = np.zeros(X32.shape[0], dtype=np.float64)
    for tree in forest.estimators_:
        total += tree.tree_.predict(X32)[:, 0]
    total /= len(forest.estimators_)
    return total
