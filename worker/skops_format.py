"""Model files in the skops format: loaded with an explicit list of trusted types, never pickle.

A skops file is a zip archive holding a JSON schema of the object tree; loading it rebuilds only
the types it is told to trust. skops trusts scikit-learn's public estimators by itself; the
estimators also hold a few internal objects (a forest's `Tree`, a k-d tree, a loss), which we
trust here by name, computed from the scikit-learn installed. Everything else (a function such
as `posix.system` inside a `FunctionTransformer`, a class from another package) is refused, and
the error names it.
"""

from __future__ import annotations

import zipfile
from functools import cache
from typing import Any

import skops.io as sio
from sklearn._loss import loss as sk_loss
from sklearn.ensemble._hist_gradient_boosting.predictor import TreePredictor
from sklearn.gaussian_process import kernels
from sklearn.metrics import _dist_metrics
from sklearn.neighbors import BallTree, KDTree
from sklearn.neural_network import _stochastic_optimizers as optimizers
from sklearn.tree._tree import Tree
from sklearn.utils import all_estimators

from shared.errors import ModelRejected
from shared.registry import ZIP_MAGIC

# Private helpers of public estimators, found by saving every scikit-learn regressor and
# classifier with skops and listing what `get_untrusted_types` reported.
_PRIVATE_HELPERS = (
    "sklearn.calibration._CalibratedClassifier",
    "sklearn.calibration._SigmoidCalibration",
    "sklearn.gaussian_process._gpc._BinaryGaussianProcessClassifierLaplace",
)


def is_skops(data: bytes) -> bool:
    """Whether `data` looks like a skops file (a zip archive; a pickle never starts so)."""
    return data.startswith(ZIP_MAGIC)


@cache
def trusted_types() -> frozenset[str]:
    """Every type name a served model file may contain beyond skops' own defaults."""
    classes: list[type] = [cls for _, cls in all_estimators()]
    classes += [Tree, TreePredictor, KDTree, BallTree]
    classes += _subclasses(vars(sk_loss).values(), sk_loss.BaseLoss)
    classes += _subclasses(vars(kernels).values(), kernels.Kernel)
    classes += _subclasses(vars(optimizers).values(), optimizers.BaseOptimizer)
    # Distance metrics, but not the one wrapping an arbitrary Python function.
    metrics = _dist_metrics.METRIC_MAPPING64.values()
    classes += [m for m in metrics if m.__name__ != "PyFuncDistance64"]
    return frozenset({_qualified(c) for c in classes} | set(_PRIVATE_HELPERS))


def untrusted_types(data: bytes) -> list[str]:
    """The types in a skops file that are neither skops' defaults nor `trusted_types()`."""
    try:
        found = sio.get_untrusted_types(data=data)
    except (zipfile.BadZipFile, KeyError, ValueError) as exc:
        raise ModelRejected(f"not a readable skops file: {exc}") from exc
    return sorted(set(found) - trusted_types())


def load(data: bytes) -> Any:
    """The object in a skops file; `ModelRejected` naming any type it holds that is not trusted.
    Only call it on verified bytes (the registry's sha256) or on an upload being vetted."""
    refused = untrusted_types(data)
    if refused:
        raise ModelRejected(
            f"the model file holds types that are not trusted: {', '.join(refused)} (only "
            "scikit-learn estimators and their internal types are loaded)",
            untrusted_types=refused,
        )
    found = sio.get_untrusted_types(data=data)  # all of them trusted by now
    try:
        return sio.loads(data, trusted=found)
    except (zipfile.BadZipFile, KeyError, ValueError, TypeError, AttributeError) as exc:
        raise ModelRejected(f"the skops file cannot be loaded: {exc}") from exc


def dump(estimator: Any) -> bytes:
    """The bytes of `estimator` in the skops format."""
    data: bytes = sio.dumps(estimator)
    return data


def _qualified(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def _subclasses(candidates: Any, base: type) -> list[type]:
    return [c for c in candidates if isinstance(c, type) and issubclass(c, base) and c is not base]
