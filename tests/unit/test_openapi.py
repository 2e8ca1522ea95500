"""The OpenAPI docs at `/docs`: every operation carries examples, and the examples are true."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from pydantic import BaseModel

from gateway import examples as ex
from shared.schemas import (
    CsvErrors,
    JobAccepted,
    JobPage,
    JobResult,
    JobView,
    LegacyPredictResponse,
    ModelsView,
)


def operations(app: FastAPI) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (method.upper(), path, op)
        for path, ops in app.openapi()["paths"].items()
        for method, op in ops.items()
    ]


def has_example(media: dict[str, Any]) -> bool:
    return bool(media.get("example") is not None or media.get("examples"))


def test_every_operation_has_request_and_answer_examples(app: FastAPI) -> None:
    ops = operations(app)
    assert len(ops) >= 10
    missing = []
    for method, path, op in ops:
        body = op.get("requestBody", {}).get("content", {})
        if not all(has_example(media) for media in body.values()):
            missing.append(f"{method} {path}: request body")
        answers = [r for code, r in op["responses"].items() if code.startswith("2")]
        if not any(has_example(m) for r in answers for m in r.get("content", {}).values()):
            missing.append(f"{method} {path}: 2xx answer")
    assert missing == []


@pytest.mark.parametrize(
    ("model", "example"),
    [
        (JobAccepted, ex.ACCEPTED),
        (JobView, ex.VIEW_RUNNING),
        (JobView, ex.VIEW_SUCCEEDED),
        (JobView, ex.VIEW_CSV),
        (JobView, ex.VIEW_CANCELLED),
        (JobResult, ex.RESULT),
        (ModelsView, ex.MODELS),
        (LegacyPredictResponse, ex.LEGACY),
        (JobAccepted, ex.CSV_ACCEPTED),
        (CsvErrors, ex.CSV_ERRORS),
        (JobPage, ex.PAGE),
    ],
)
def test_answer_examples_match_their_schemas(model: type[BaseModel], example: Any) -> None:
    assert model.model_validate(example).model_dump(mode="json", exclude_unset=True) == example


def test_request_examples_do_what_they_say(client: TestClient) -> None:
    for name, example in ex.SUBMIT_BODIES.items():
        response = client.post("/v1/jobs", json=example["value"])
        assert response.status_code == (422 if name == "invalid" else 202), response.text
    upload = ex.CSV_UPLOAD["value"]
    fields = {"model": upload["model"], "id_column": upload["id_column"]}
    accepted = client.post("/v1/jobs/csv", data=fields, files={"file": ("c.csv", upload["file"])})
    assert accepted.status_code == 202, accepted.text
    assert accepted.json()["n_rows"] == 2
    csv = ex.CSV_FORM["value"]["file"]
    response = client.post("/predict_csv", files={"csv_file": ("rows.csv", csv)})
    assert response.status_code == 200
    assert response.json()["data"] == pytest.approx([sum(ex.EXAMPLE_ROW), sum(ex.OTHER_ROW)])
