"""`POST /v1/models/{name}/versions` on fakeredis, with the worker's vetting run in-process."""

from __future__ import annotations

import hashlib
import io
import os
import shutil
from pathlib import Path

import joblib
import numpy as np
import pandas as pd
import pytest
import skops.io as sio
from fastapi.testclient import TestClient
from sklearn.datasets import load_diabetes
from sklearn.linear_model import LinearRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer, StandardScaler
from sklearn.tree import DecisionTreeRegressor

from gateway.state import GatewayState
from shared.errors import ModelError
from shared.registry import Registry
from shared.settings import Settings
from tests.unit.conftest import FakePublisher
from worker import skops_format
from worker.model_cache import ModelCache
from worker.model_install import verify_upload
from worker.sklearn_model import SklearnModel

ADMIN, USER = "mlq_admin_key_0123456789", "mlq_user_key_0123456789"


def digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


@pytest.fixture
def settings(model_dir: Path, tmp_path: Path) -> Settings:
    """A registry of its own (uploads write into it), keys on, small size limit."""
    root = tmp_path / "models"
    shutil.copytree(model_dir, root)
    return Settings(
        model_dir=root,
        default_model="demo",
        max_rows_per_job=100,
        sync_timeout=2,
        max_model_bytes=2 * 1024**2,
        api_keys=[digest(USER)],
        admin_keys=[digest(ADMIN)],
    )


def fitted_tree(n_features: int = 10, frame: bool = False) -> DecisionTreeRegressor:
    X, y = load_diabetes(return_X_y=True, as_frame=frame)
    X = X.iloc[:, :n_features] if frame else X[:, :n_features]
    return DecisionTreeRegressor(max_depth=4, random_state=0).fit(X, y)


def upload(
    client: TestClient, name: str, data: bytes, key: str = ADMIN, filename: str = "m.skops"
) -> tuple[int, dict[str, object]]:
    response = client.post(
        f"/v1/models/{name}/versions",
        files={"file": (filename, data, "application/octet-stream")},
        headers={"Authorization": f"Bearer {key}"},
    )
    return response.status_code, response.json()


def versions(settings: Settings, name: str) -> list[str]:
    folder = settings.model_dir / name
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


# The worker predicts arrays: a model fitted on a DataFrame says so, harmlessly.
@pytest.mark.filterwarnings("ignore:X does not have valid feature names")
def test_a_skops_upload_becomes_the_next_version_with_a_manifest_written_by_the_server(
    client: TestClient, settings: Settings, diabetes_rows: list[list[float]]
) -> None:
    estimator = fitted_tree(frame=True)
    data = sio.dumps(estimator)
    status, body = upload(client, "demo", data)
    assert status == 201, body
    assert body["name"] == "demo" and body["version"] == "2"
    assert body["sha256"] == hashlib.sha256(data).hexdigest()
    assert body["estimator"] == "DecisionTreeRegressor" and body["n_features"] == 10
    assert body["feature_names"] == list(estimator.feature_names_in_)
    assert body["artifact"] == "model.skops"
    assert versions(settings, "demo") == ["1", "2"]  # no scratch folder left behind
    info = Registry(settings.model_dir, "demo").resolve("demo")
    served = SklearnModel.from_bytes(Registry(settings.model_dir, "demo").read_artifact(info))
    X = pd.DataFrame(np.asarray(diabetes_rows[:20]), columns=estimator.feature_names_in_)
    assert served.predict(X.to_numpy()).tolist() == estimator.predict(X).tolist()


def test_a_new_name_gets_version_1_and_generic_feature_names(
    client: TestClient, settings: Settings
) -> None:
    status, body = upload(client, "fresh", sio.dumps(fitted_tree(n_features=3)))
    assert status == 201, body
    assert (body["version"], body["feature_names"]) == ("1", ["f0", "f1", "f2"])
    assert versions(settings, "fresh") == ["1"]


def test_wrong_n_features_is_a_422_naming_both_counts_and_nothing_is_written(
    client: TestClient, settings: Settings
) -> None:
    status, body = upload(client, "demo", sio.dumps(fitted_tree(n_features=4)))
    assert status == 422, body
    assert body["title"] == "ModelRejected"
    assert "takes 4 features; demo:1 takes 10" in str(body["detail"])
    assert versions(settings, "demo") == ["1"]


def test_untrusted_types_are_a_422_naming_them(client: TestClient, settings: Settings) -> None:
    evil = make_pipeline(FunctionTransformer(os.system), LinearRegression())
    status, body = upload(client, "demo", sio.dumps(evil))
    assert status == 422, body
    assert f"{os.system.__module__}.system" in str(body["detail"])
    assert "not trusted" in str(body["detail"])
    assert versions(settings, "demo") == ["1"]


def test_a_pipeline_of_scikit_learn_types_is_trusted(client: TestClient) -> None:
    X, y = load_diabetes(return_X_y=True)
    pipeline = make_pipeline(StandardScaler(), LinearRegression()).fit(X, y)
    status, body = upload(client, "piped", sio.dumps(pipeline))
    assert status == 201, body
    assert body["estimator"] == "Pipeline"


def test_an_unfitted_estimator_is_refused(client: TestClient) -> None:
    status, body = upload(client, "demo", sio.dumps(LinearRegression()))
    assert status == 422, body
    assert "not a fitted estimator" in str(body["detail"])


def test_a_pickle_is_refused_unless_allowed(client: TestClient, settings: Settings) -> None:
    buffer = io.BytesIO()
    joblib.dump(fitted_tree(), buffer)
    status, body = upload(client, "demo", buffer.getvalue(), filename="m.joblib")
    assert status == 415, body
    assert "MLQUEUE_ALLOW_PICKLE_UPLOADS" in str(body["detail"])
    assert versions(settings, "demo") == ["1"]


def test_a_pickle_is_installed_when_allowed(
    settings: Settings,
    client: TestClient,
    state: GatewayState,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    allowed = settings.model_copy(update={"allow_pickle_uploads": True})
    monkeypatch.setattr(state, "settings", allowed)
    monkeypatch.setattr(state.jobs.publisher.runtime, "settings", allowed)
    tree, buffer = fitted_tree(), io.BytesIO()
    joblib.dump(tree, buffer)
    status, body = upload(client, "demo", buffer.getvalue(), filename="m.joblib")
    assert status == 201, body
    assert body["artifact"] == "model.joblib" and body["version"] == "2"
    # A joblib version is served beside the skops one (the loader picks by content).
    _, served = ModelCache(Registry(settings.model_dir, "demo")).get("demo")
    X = load_diabetes().data[:20]
    assert served.predict(X).tolist() == tree.predict(X).tolist()


def test_a_file_that_is_no_model_is_a_415(client: TestClient) -> None:
    status, body = upload(client, "demo", b"name,value\n1,2\n", filename="m.csv")
    assert status == 415, body
    assert "not a skops file" in str(body["detail"])


def test_only_admin_keys_may_upload(client: TestClient, settings: Settings) -> None:
    data = sio.dumps(fitted_tree())
    assert upload(client, "demo", data, key=USER)[0] == 403
    assert upload(client, "demo", data, key="mlq_nobody")[0] == 401
    assert versions(settings, "demo") == ["1"]


def test_a_file_over_the_limit_is_a_413(client: TestClient, settings: Settings) -> None:
    data = b"PK\x03\x04" + os.urandom(settings.max_model_bytes)
    status, body = upload(client, "demo", data)
    assert status == 413, body
    assert versions(settings, "demo") == ["1"]


@pytest.mark.parametrize("name", ["default", ".hidden", "a/b"])
def test_invalid_names_are_refused(client: TestClient, name: str) -> None:
    status, _ = upload(client, name, sio.dumps(fitted_tree()))
    assert status in (404, 422)


def test_an_empty_file_is_a_415(client: TestClient) -> None:
    status, body = upload(client, "demo", b"")
    assert status == 415 and "empty" in str(body["detail"])


def test_a_redelivered_verify_message_installs_nothing_more(
    client: TestClient, settings: Settings, publisher: FakePublisher
) -> None:
    status, _ = upload(client, "demo", sio.dumps(fitted_tree()))
    assert status == 201
    (message,) = [m for m in publisher.sent if m["name"] == "mlqueue.models.verify"]
    rt = publisher.runtime
    kwargs = message["kwargs"]
    again = verify_upload(
        rt.settings, rt.jobs.redis, rt.models.registry, kwargs["upload_id"], "demo", "skops"
    )
    assert again is None  # the bytes were taken by the first delivery
    assert versions(settings, "demo") == ["1", "2"]


def test_a_skops_named_artifact_that_is_a_pickle_is_never_loaded(settings: Settings) -> None:
    """Loaders choose skops or joblib by content; the registry keeps a `.skops` name honest."""
    folder = settings.model_dir / "demo" / "1"
    manifest = Registry(settings.model_dir, "demo").resolve("demo")
    pickled = io.BytesIO()
    joblib.dump(fitted_tree(), pickled)
    (folder / "model.skops").write_bytes(pickled.getvalue())
    manifest = manifest.model_copy(
        update={"sha256": hashlib.sha256(pickled.getvalue()).hexdigest()}
    )
    with pytest.raises(ModelError, match="is not a skops file"):
        Registry(settings.model_dir, "demo").read_artifact(manifest)


def test_serving_a_skops_file_with_untrusted_types_is_a_model_error() -> None:
    evil = sio.dumps(make_pipeline(FunctionTransformer(os.system), LinearRegression()))
    with pytest.raises(ModelError, match=r"not trusted: .*\.system"):
        SklearnModel.from_bytes(evil)


def test_the_trusted_types_hold_estimators_internals_but_no_function_wrapper() -> None:
    trusted = skops_format.trusted_types()
    assert "sklearn.tree._tree.Tree" in trusted
    assert "sklearn.ensemble._forest.RandomForestRegressor" in trusted
    assert "sklearn.neighbors._kd_tree.KDTree" in trusted
    assert not any(t.endswith("PyFuncDistance64") for t in trusted)
    assert all(t.startswith("sklearn.") for t in trusted)
