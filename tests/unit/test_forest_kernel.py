"""The compiled forest walk (`worker.forest_kernel`) equals scikit-learn's `predict` bit for bit."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.ensemble import ExtraTreesRegressor, RandomForestRegressor

from worker import forest_kernel
from worker.sklearn_model import SklearnModel

F32 = np.finfo(np.float32)


def fitted(
    kind: type = RandomForestRegressor, n_features: int = 6, **params: object
) -> SklearnModel:
    rng = np.random.default_rng(1)
    X = rng.normal(size=(400, n_features))
    y = X[:, 0] * 3 + np.sin(X[:, 1 % n_features]) + rng.normal(scale=0.1, size=400)
    estimator = kind(n_estimators=params.pop("n_estimators", 25), random_state=0, **params)
    return SklearnModel(estimator).train(X, y)


def same(model: SklearnModel, X: np.ndarray) -> bool:
    return np.array_equal(model.predict(X), model.estimator.predict(X))


@pytest.mark.parametrize("kind", [RandomForestRegressor, ExtraTreesRegressor])
@pytest.mark.parametrize(
    "params", [{}, {"max_depth": 1}, {"min_samples_leaf": 20}, {"max_features": 0.3}]
)
def test_equal_on_random_rows(kind: type, params: dict[str, object]) -> None:
    model = fitted(kind, **params)
    X = np.random.default_rng(2).normal(scale=1.5, size=(5_000, 6))
    assert same(model, X)


def test_rows_on_either_side_of_every_threshold() -> None:
    """A float32 input at, just below and just above each split: where rounding would show."""
    model = fitted()
    rows = []
    for tree in model.estimator.estimators_:
        inner = tree.tree_.children_left != -1
        for feature, t in zip(tree.tree_.feature[inner], tree.tree_.threshold[inner], strict=True):
            t32 = np.float32(t)
            for x in (np.nextafter(t32, -np.inf), t32, np.nextafter(t32, np.inf)):
                row = np.zeros(6)
                row[feature] = x
                rows.append(row)
    X = np.asarray(rows)
    assert len(X) > 1_000
    assert same(model, X)


def test_extreme_values() -> None:
    """The largest and smallest values scikit-learn takes (it refuses infinities, as the
    gateway and the CSV parser do before a row reaches a model)."""
    model = fitted()
    cells = [F32.max, -F32.max, 1e38, 5e-324, -5e-324, -0.0, 0.0, F32.tiny]
    X = np.array([[c] * 6 for c in cells] + [[c, -c, c, 0, 1, -1] for c in cells])
    with np.errstate(over="ignore", invalid="ignore"):  # scikit-learn's finiteness check sums X
        assert same(model, X)


def test_nan_takes_the_side_each_node_learnt() -> None:
    rng = np.random.default_rng(3)
    X = rng.normal(size=(300, 4))
    X[rng.random(X.shape) < 0.2] = np.nan  # trained with gaps: nodes learn a side for NaN
    model = SklearnModel(RandomForestRegressor(n_estimators=10, random_state=0))
    model.train(X, np.nan_to_num(X[:, 0]) + rng.normal(size=300))
    probe = rng.normal(size=(500, 4))
    probe[rng.random(probe.shape) < 0.3] = np.nan
    assert same(model, probe)
    assert same(model, np.nan_to_num(probe))


@pytest.mark.parametrize(
    "n",
    [
        0,
        1,
        2,
        forest_kernel.BLOCK_ROWS - 1,
        forest_kernel.BLOCK_ROWS,
        forest_kernel.BLOCK_ROWS + 1,
        3 * forest_kernel.BLOCK_ROWS + 7,
    ],
)
def test_any_number_of_rows(n: int) -> None:
    model = fitted()
    X = np.random.default_rng(4).normal(size=(n, 6))
    out = model.predict(X)
    assert out.shape == (n,) and out.dtype == np.float64
    assert np.array_equal(out, model.estimator.predict(X) if n else np.empty(0))


def test_any_memory_layout_and_dtype() -> None:
    model = fitted()
    X = np.random.default_rng(5).normal(size=(700, 12))
    expected = model.estimator.predict(X[:, ::2])
    assert np.array_equal(model.predict(X[:, ::2]), expected)  # a strided view
    assert np.array_equal(model.predict(np.asfortranarray(X[:, ::2])), expected)
    X32 = X[:, ::2].astype(np.float32)
    assert np.array_equal(model.predict(X32), model.estimator.predict(X32))


def test_many_features_and_a_tree_that_is_a_single_leaf() -> None:
    wide = fitted(n_features=300, n_estimators=5)
    assert same(wide, np.random.default_rng(6).normal(size=(200, 300)))
    flat = SklearnModel(RandomForestRegressor(n_estimators=3, random_state=0))
    flat.train(np.random.default_rng(7).normal(size=(50, 3)), np.full(50, 2.5))
    assert flat.compiled_forest().depths.tolist() == [0, 0, 0]
    assert flat.predict(np.zeros((4, 3))).tolist() == [2.5] * 4


def test_training_again_rebuilds_the_walk() -> None:
    model = fitted()
    X = np.random.default_rng(8).normal(size=(100, 6))
    before = model.predict(X)
    model.train(X, -np.arange(100.0))
    assert same(model, X)
    assert not np.array_equal(model.predict(X), before)


def test_siblings_sit_side_by_side() -> None:
    """The layout the branch-free step relies on: right child = left child + 1, leaves loop."""
    compiled = fitted(n_estimators=3).compiled_forest()
    leaves = np.isinf(compiled.threshold)
    ids = np.arange(len(compiled.threshold))
    assert np.array_equal(compiled.first_child[leaves], ids[leaves])
    inner = ~leaves
    assert (compiled.first_child[inner] > ids[inner]).all()
    assert len(set(compiled.first_child[inner].tolist())) == inner.sum()  # one pair per parent
