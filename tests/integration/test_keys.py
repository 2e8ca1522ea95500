"""API keys on the real system: a key setting that holds no digest stops startup, the auth state
is logged, and jobs without an owner are seen by admin keys only."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from celery import Celery

from devrun import processes
from gateway import keys
from tests.integration.conftest import System, running_system
from worker.sklearn_model import SklearnModel

pytestmark = pytest.mark.integration
KEY, ADMIN = keys.new_key(), keys.new_key()


@pytest.fixture(scope="module")
def keyed(tmp_path_factory: pytest.TempPathFactory, model_dir: Path) -> Iterator[System]:
    with running_system(
        tmp_path_factory.mktemp("keyed-system"),
        model_dir,
        db_offset=2,
        api_keys=json.dumps([keys.digest(KEY)]),
        admin_keys=keys.digest(ADMIN),
    ) as system:
        yield system


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.mark.parametrize("value", [",", " ", "[]", '[""]'])
def test_a_key_setting_with_no_digest_stops_the_gateway_with_a_clear_message(
    tmp_path: Path, value: str
) -> None:
    env = {"MLQUEUE_API_KEYS": value, "MLQUEUE_PORT": str(processes.free_port())}
    log = tmp_path / "gateway.log"
    gateway = processes.spawn(processes.gateway_argv(), env, log=log)
    try:
        code = gateway.wait(timeout=30)
    finally:
        processes.stop(gateway)  # the whole group, should it have started serving after all
    output = log.read_text()
    assert code != 0
    assert "api_keys is set but holds no SHA-256 digest" in output
    assert "Traceback" not in output


def test_startup_logs_the_auth_state(system: System, keyed: System) -> None:
    off = (system.workdir / "gateway.log").read_text()
    assert '"level":"WARNING","logger":"gateway.keys"' in off and "auth is off" in off
    on = (keyed.workdir / "gateway.log").read_text()
    assert '"level":"INFO","logger":"gateway.keys"' in on
    assert "auth is on: 1 API keys, 1 admin keys" in on


def test_ownerless_jobs_are_404_to_ordinary_keys_and_visible_to_admin_keys(
    keyed: System, model_dir: Path, diabetes_rows: list[list[float]]
) -> None:
    app = Celery(broker=keyed.redis_url, backend=keyed.redis_url)
    rows = diabetes_rows[:3]
    task = app.send_task("mlqueue.predict", kwargs={"rows": rows}, queue="mlqueue")
    task.get(timeout=20)
    app.close()
    estimator = SklearnModel.load(model_dir / "demo" / "1" / "model.skops")
    with httpx.Client(base_url=keyed.base_url, timeout=30) as http:
        for method, path in [
            ("GET", f"/v1/jobs/{task.id}"),
            ("GET", f"/v1/jobs/{task.id}/result"),
            ("DELETE", f"/v1/jobs/{task.id}"),
        ]:
            response = http.request(method, path, headers=bearer(KEY))
            assert response.status_code == 404, (method, path, response.text)
        response = http.get(f"/v1/jobs/{task.id}/result", headers=bearer(ADMIN))
        assert response.status_code == 200, response.text
        assert response.json()["data"] == estimator.predict(np.asarray(rows)).tolist()
        # The admin key's own jobs are its own, like any key's.
        job = http.post("/v1/jobs", json={"data": rows}, headers=bearer(ADMIN)).json()["job_id"]
        assert http.get(f"/v1/jobs/{job}", headers=bearer(KEY)).status_code == 404
        assert http.get(f"/v1/jobs/{job}", headers=bearer(ADMIN)).status_code == 200
