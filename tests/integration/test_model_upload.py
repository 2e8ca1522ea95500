"""Model uploads on the real system: the gateway stages the file in Redis, a real worker vets it
with skops' trusted types, smoke-tests it and renames it into the registry; then jobs and the V2
protocol serve it, and its predictions equal the uploaded estimator's.

Uploads change the registry, so this module runs its own system on a copy of it: the session's
system keeps the one model the other tests expect."""

from __future__ import annotations

import io
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import joblib
import numpy as np
import pytest
import skops.io as sio
from sklearn.datasets import load_diabetes
from sklearn.ensemble import RandomForestRegressor
from sklearn.linear_model import LinearRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer

from tests.integration.conftest import API_KEYS, System, running_system

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory, model_dir: Path) -> Path:
    """A registry of this module's own, holding the demo model."""
    root = tmp_path_factory.mktemp("upload-registry") / "models"
    shutil.copytree(model_dir, root)
    return root


@pytest.fixture(scope="module")
def upload_system(tmp_path_factory: pytest.TempPathFactory, registry: Path) -> Iterator[System]:
    with running_system(tmp_path_factory.mktemp("upload-system"), registry, db_offset=9) as system:
        yield system


@pytest.fixture
def http(upload_system: System) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=upload_system.base_url, timeout=30) as client:
        yield client


def upload(http: httpx.Client, name: str, data: bytes) -> httpx.Response:
    files = {"file": ("model.skops", data, "application/octet-stream")}
    return http.post(f"/v1/models/{name}/versions", files=files)


def infer(http: httpx.Client, tensor: dict[str, object]) -> dict[str, Any]:
    response = http.post("/v2/models/uploaded/infer", json={"inputs": [tensor]})
    assert response.status_code == 200, response.text
    return dict(response.json())


def folders(model_dir: Path, name: str) -> list[str]:
    folder = model_dir / name
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


def test_an_uploaded_skops_model_is_served_by_jobs_and_v2(
    http: httpx.Client, registry: Path, diabetes_rows: list[list[float]]
) -> None:
    X, y = load_diabetes(return_X_y=True)
    forest = RandomForestRegressor(n_estimators=7, max_depth=5, random_state=1).fit(X, y)
    response = upload(http, "uploaded", sio.dumps(forest))
    assert response.status_code == 201, response.text
    manifest = response.json()
    assert (manifest["name"], manifest["version"]) == ("uploaded", "1")
    assert manifest["estimator"] == "RandomForestRegressor" and manifest["n_features"] == 10
    assert folders(registry, "uploaded") == ["1"]  # the scratch folder was renamed, not left
    rows = diabetes_rows[:30]
    expected = forest.predict(np.asarray(rows)).tolist()
    job = http.post("/v1/jobs", json={"data": rows, "model": "uploaded"}).json()
    result = http.get(f"/v1/jobs/{job['job_id']}/result", params={"wait": 20}).json()
    assert (result["version"], result["data"]) == ("1", expected)
    tensor = {"name": "input-0", "shape": [30, 10], "datatype": "FP64", "data": rows}
    answer = http.post("/v2/models/uploaded/infer", json={"inputs": [tensor]}).json()
    assert answer["outputs"][0]["data"] == expected
    # A second upload is the next version, and the name serves it: at once from the gateway
    # process that answered the upload, within a second (registry cache) from the others.
    second = upload(http, "uploaded", sio.dumps(LinearRegression().fit(X, y)))
    assert second.status_code == 201, second.text
    assert second.json()["version"] == "2"
    deadline = time.monotonic() + 5
    while (answer := infer(http, tensor))["model_version"] != "2":
        assert time.monotonic() < deadline, answer
    assert answer["outputs"][0]["data"] == pytest.approx(
        LinearRegression().fit(X, y).predict(np.asarray(rows)).tolist(), rel=1e-12
    )


def test_refused_uploads_name_the_reason_and_leave_no_version(
    http: httpx.Client, registry: Path
) -> None:
    X, y = load_diabetes(return_X_y=True)
    evil = make_pipeline(FunctionTransformer(os.system), LinearRegression())
    response = upload(http, "refused", sio.dumps(evil))
    assert response.status_code == 422, response.text
    assert f"{os.system.__module__}.system" in response.json()["detail"]
    buffer = io.BytesIO()
    joblib.dump(LinearRegression().fit(X, y), buffer)
    response = upload(http, "refused", buffer.getvalue())
    assert response.status_code == 415, response.text
    assert "MLQUEUE_ALLOW_PICKLE_UPLOADS" in response.json()["detail"]
    response = upload(http, "demo", sio.dumps(LinearRegression().fit(X[:, :4], y)))
    assert response.status_code == 422, response.text
    assert "takes 4 features; demo:1 takes 10" in response.json()["detail"]
    assert folders(registry, "refused") == []
    assert folders(registry, "demo") == ["1"]


def test_only_admin_keys_may_upload_on_the_keyed_system(keyed_system: System) -> None:
    """The keyed system has API keys but no admin key: nobody may upload there."""
    X, y = load_diabetes(return_X_y=True)
    data = sio.dumps(LinearRegression().fit(X, y))
    with httpx.Client(base_url=keyed_system.base_url, timeout=30) as http:
        files = {"file": ("model.skops", data, "application/octet-stream")}
        response = http.post("/v1/models/keyed/versions", files=files)
        assert response.status_code == 401, response.text
        headers = {"Authorization": f"Bearer {API_KEYS[0]}"}
        response = http.post("/v1/models/keyed/versions", files=files, headers=headers)
        assert response.status_code == 403, response.text
        assert "admin key" in response.json()["detail"]
