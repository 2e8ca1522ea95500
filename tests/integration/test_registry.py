"""The registry on the real system: a manifest cannot point the worker outside its folder, and
a model name starting with a dot never reaches the file system."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import httpx
import pytest
from celery import Celery

from tests.integration.conftest import System

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("name", ["..", ".hidden", "..:1"])
def test_a_model_name_starting_with_a_dot_is_422(http: httpx.Client, name: str) -> None:
    response = http.post("/v1/jobs", json={"data": [[0.0] * 10], "model": name})
    assert response.status_code == 422, response.text
    assert response.json()["detail"].startswith("model: String should match pattern")


def test_a_manifest_pointing_outside_its_folder_fails_the_job_not_loads_the_file(
    http: httpx.Client, system: System, model_dir: Path, tmp_path: Path
) -> None:
    outside = tmp_path / "model.joblib"
    shutil.copy(model_dir / "demo" / "1" / "model.skops", outside)  # same bytes, same sha256
    folder = model_dir / "escape" / "1"
    folder.mkdir(parents=True)
    try:
        (folder / "model.joblib").write_bytes(b"not this one")
        manifest = json.loads((model_dir / "demo" / "1" / "manifest.json").read_text())
        manifest.update(name="escape", artifact=str(outside))
        (folder / "manifest.json").write_text(json.dumps(manifest))
        says = "artifact must be a file name in the version's folder"
        # The gateway resolves the model at submit and refuses it...
        response = http.post("/v1/jobs", json={"data": [[0.0] * 10], "model": "escape"})
        assert response.status_code == 503, response.text
        assert response.json()["title"] == "ModelError" and says in response.json()["detail"]
        # ...and so does the worker, for a task enqueued directly.
        app = Celery(broker=system.redis_url, backend=system.redis_url)
        task = app.send_task(
            "mlqueue.predict", kwargs={"rows": [[0.0] * 10], "model": "escape"}, queue="mlqueue"
        )
        with pytest.raises(Exception, match=says) as info:
            task.get(timeout=20)
        app.close()
        assert type(info.value).__name__ == "ModelError"
        assert http.get(f"/v1/jobs/{task.id}").json()["error"]["type"] == "ModelError"
    finally:
        shutil.rmtree(model_dir / "escape")


def test_a_csv_job_for_a_model_name_starting_with_a_dot_is_422(http: httpx.Client) -> None:
    data = b"0,0,0,0,0,0,0,0,0,0\n"
    for name in ("..", ".hidden"):
        response = http.post(
            "/v1/jobs/csv", params={"model": name}, files={"file": ("a.csv", data, "text/csv")}
        )
        assert response.status_code == 422, response.text
        response = http.post(
            "/v1/jobs/csv", data={"model": name}, files={"file": ("a.csv", data, "text/csv")}
        )
        assert response.status_code == 422, response.text
