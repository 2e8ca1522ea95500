"""The model interface: what a framework must implement to be served.

It keeps the article's four verbs (train, predict, save, load). scikit-learn is one implementation
(`worker.sklearn_model.SklearnModel`); another framework plugs in by implementing this protocol.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Protocol, Self

if TYPE_CHECKING:  # the gateway never imports numpy at run time
    import numpy as np
    import numpy.typing as npt

    Matrix = npt.NDArray[np.float64]
    Vector = npt.NDArray[np.float64]


class Model(Protocol):
    """A trained predictor of one float per row."""

    @property
    def n_features(self) -> int:
        """How many columns each row must have."""
        ...

    def train(self, X: Matrix, y: Vector) -> Self:
        """Fit on `X` (rows x features) and `y`; returns itself."""
        ...

    def predict(self, X: Matrix) -> Vector:
        """One prediction per row of `X`."""
        ...

    def save(self, path: Path) -> None:
        """Write the trained model to `path`."""
        ...

    @classmethod
    def load(cls, path: Path) -> Self:
        """Read a model written by `save` (verify the file first: loading may run code)."""
        ...

    @classmethod
    def from_bytes(cls, data: bytes) -> Self:
        """A model from the bytes of a file written by `save`: the serving path hashes these
        bytes and loads them, so the file is never read twice (verify first: may run code)."""
        ...
