"""Pure prediction logic: validate rows as a direct enqueuer may send anything, then predict."""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from shared.errors import InvalidInput
from shared.features import value_problem
from shared.model import Model

Matrix = npt.NDArray[np.float64]
MAX_REPORTED = 5


def to_matrix(rows: Any, n_features: int) -> Matrix:
    """`rows` as a float64 matrix, or `InvalidInput` naming the first bad rows and columns."""
    if not isinstance(rows, list) or not rows:
        raise InvalidInput("rows must be a non-empty list of rows")
    problems: list[str] = []
    for i, row in enumerate(rows):
        problem = _row_problem(row, n_features)
        if problem:
            problems.append(f"row {i}: {problem}")
            if len(problems) == MAX_REPORTED:
                break
    if problems:
        raise InvalidInput("; ".join(problems), errors=problems)
    return np.asarray(rows, dtype=np.float64)


def _row_problem(row: Any, n_features: int) -> str | None:
    if not isinstance(row, list):
        return f"expected a list of {n_features} numbers, got {type(row).__name__}"
    if len(row) != n_features:
        return f"expected {n_features} features, got {len(row)}"
    for j, value in enumerate(row):
        problem = value_problem(value)
        if problem:
            return f"column {j}: {problem}"
    return None


def predict_rows(model: Model, rows: Any) -> list[float]:
    """Validate `rows` for `model` and return one prediction per row."""
    X = to_matrix(rows, model.n_features)
    return [float(y) for y in model.predict(X)]
