"""Feature values on the real system: a huge number is a 422 naming row and column, or (when
float32 holds it) a prediction; never a 500, and never anyone else's failure."""

from __future__ import annotations

from pathlib import Path

import httpx
import numpy as np
import pytest
from celery import Celery

from tests.integration.conftest import System
from worker.sklearn_model import SklearnModel

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def estimator(model_dir: Path) -> SklearnModel:
    return SklearnModel.load(model_dir / "demo" / "1" / "model.skops")


def test_a_huge_integer_within_float32_is_predicted_not_a_500(
    http: httpx.Client, estimator: SklearnModel, diabetes_rows: list[list[float]]
) -> None:
    rows = [[10**26, *diabetes_rows[0][1:]], diabetes_rows[1]]
    response = http.post("/predict", json={"data": rows})
    assert response.status_code == 200, response.text
    expected = estimator.predict(np.asarray(rows, dtype=np.float64)).tolist()
    assert response.json() == {"data": expected}


@pytest.mark.parametrize("path", ["/predict", "/v1/jobs"])
def test_a_feature_outside_float32_is_422_naming_row_and_column(
    http: httpx.Client, path: str
) -> None:
    body = '{"data": [[0,0,0,0,0,0,0,0,0,0], [0,0,1e39,0,0,0,0,0,0,0]]}'
    response = http.post(path, content=body, headers={"content-type": "application/json"})
    assert response.status_code == 422, response.text
    assert response.json()["detail"].startswith(
        "data: row 1, column 2: value 1e+39 is outside the float32 range"
    )


def test_a_csv_cell_outside_float32_is_422_naming_line_and_column(http: httpx.Client) -> None:
    csv = b"0,0,0,0,0,0,0,0,0,0\n0,0,0,0,0,0,0,0,0,-1e300\n"
    response = http.post("/predict_csv", files={"csv_file": ("d.csv", csv, "text/csv")})
    assert response.status_code == 422, response.text
    assert "line 2, column 10 (s6): value -1e+300 is outside" in response.json()["detail"]


def test_a_direct_task_with_a_feature_outside_float32_fails_naming_row_and_column(
    http: httpx.Client, system: System
) -> None:
    app = Celery(broker=system.redis_url, backend=system.redis_url)
    rows = [[0.0] * 10, [0.0] * 9 + [1e308]]
    task = app.send_task("mlqueue.predict", kwargs={"rows": rows}, queue="mlqueue")
    with pytest.raises(Exception, match=r"row 1: column 9: value 1e\+308 is outside") as info:
        task.get(timeout=20)
    assert type(info.value).__name__ == "InvalidInput"
    assert http.get(f"/v1/jobs/{task.id}").json()["status"] == "failed"
    app.close()
