"""The Open Inference Protocol routes on fakeredis, with `MockModel` (it predicts row sums)."""

from __future__ import annotations

import hashlib
import struct
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from pydantic import BaseModel

from gateway import examples_v2 as ex
from gateway.state import GatewayState
from shared.oip import InferRequest, InferResponse, ModelMetadata, ModelReady
from shared.schemas import ModelInfo
from tests.unit.conftest import FakePublisher
from worker.sklearn_model import SklearnModel

N = 10  # the demo model's features


def tensor(rows: list[list[float]], datatype: str = "FP64", nested: bool = False) -> dict:
    data = rows if nested else [v for row in rows for v in row]
    return {
        "name": "input-0",
        "shape": [len(rows), len(rows[0])],
        "datatype": datatype,
        "data": data,
    }


def infer(client: TestClient, body: dict, path: str = "/v2/models/demo/infer") -> tuple[int, dict]:
    response = client.post(path, json=body)
    return response.status_code, response.json()


def test_health_and_model_metadata(client: TestClient) -> None:
    assert client.get("/v2/health/live").json() == {"live": True}
    meta = client.get("/v2/models/demo").json()
    assert meta == {
        "name": "demo",
        "versions": ["1"],
        "platform": "scikit-learn",
        "inputs": [{"name": "input-0", "datatype": "FP64", "shape": [-1, N]}],
        "outputs": [{"name": "predict", "datatype": "FP64", "shape": [-1]}],
    }
    assert client.get("/v2/models/demo/versions/1").json() == meta
    assert client.get("/v2/models/demo/ready").json() == {"name": "demo", "ready": True}
    assert client.get("/v2/models/demo/versions/1/ready").status_code == 200


def test_unknown_models_and_versions_are_404_in_the_protocols_format(client: TestClient) -> None:
    for path in ("/v2/models/nope", "/v2/models/demo/versions/7", "/v2/models/nope/ready"):
        response = client.get(path)
        assert response.status_code == 404, path
        assert set(response.json()) == {"error"} and "unknown model" in response.json()["error"]
    status, body = infer(client, {"inputs": [tensor([[1.0] * N])]}, "/v2/models/nope/infer")
    assert status == 404 and "unknown model 'nope'" in body["error"]


@pytest.mark.parametrize(
    ("datatype", "rows"),
    [
        ("FP64", [[0.5 * i + j for i in range(N)] for j in range(3)]),
        ("FP32", [[0.25 * i for i in range(N)]]),
        ("INT64", [[i * 3 for i in range(N)], [1] * N]),
        ("INT8", [[-i for i in range(N)]]),
    ],
)
def test_infer_predicts_each_row_and_echoes_the_id(
    client: TestClient, datatype: str, rows: list[list[float]]
) -> None:
    for nested in (False, True):
        status, body = infer(client, {"id": "r-1", "inputs": [tensor(rows, datatype, nested)]})
        assert status == 200, body
        assert body["model_name"] == "demo" and body["model_version"] == "1"
        assert body["id"] == "r-1"
        assert body["outputs"] == [
            {"name": "predict", "shape": [len(rows)], "datatype": "FP64",
             "data": [float(sum(r)) for r in rows]}
        ]  # fmt: skip


def test_infer_goes_through_the_queue_to_the_pinned_version(
    client: TestClient, publisher: FakePublisher
) -> None:
    status, _ = infer(client, {"inputs": [tensor([[1.0] * N])]}, "/v2/models/demo/versions/1/infer")
    assert status == 200
    assert [m["kwargs"]["model"] for m in publisher.sent] == ["demo:1"]


def test_binary_tensor_data_is_read_after_the_json_header(client: TestClient) -> None:
    rows = [[float(i) + 0.5 for i in range(N)], [2.0] * N]
    raw = struct.pack(f"<{2 * N}f", *[v for r in rows for v in r])
    header = (
        b'{"inputs":[{"name":"input-0","shape":[2,10],"datatype":"FP32",'
        b'"parameters":{"binary_data_size":%d}}]}' % len(raw)
    )
    response = client.post(
        "/v2/models/demo/infer",
        content=header + raw,
        headers={
            "Inference-Header-Content-Length": str(len(header)),
            "Content-Type": "application/octet-stream",
        },
    )
    assert response.status_code == 200, response.text
    assert response.json()["outputs"][0]["data"] == [sum(r) for r in rows]


@pytest.mark.parametrize(
    ("tensor_body", "says"),
    [
        ({"name": "x", "shape": [1, 3], "datatype": "FP64", "data": [1, 2, 3]}, "shape [1, 3]"),
        ({"name": "x", "shape": [2, N], "datatype": "FP64", "data": [1.0] * N}, "10 values"),
        ({"name": "x", "shape": [1, N], "datatype": "BYTES", "data": ["a"] * N}, "'BYTES'"),
        ({"name": "x", "shape": [1, N], "datatype": "INT32", "data": [1.5] * N}, "not an integer"),
        ({"name": "x", "shape": [1, N], "datatype": "FP64", "data": ["1"] * N}, "not a number"),
        ({"name": "x", "shape": [1, N], "datatype": "FP64", "data": [True] * N}, "not a number"),
        ({"name": "x", "shape": [1, N], "datatype": "FP64"}, "no `data`"),
        ({"name": "x", "shape": [N], "datatype": "FP64", "data": [1.0] * N}, "must be [n, 10]"),
    ],
)
def test_bad_tensors_are_400_naming_what_is_wrong(
    client: TestClient, tensor_body: dict, says: str
) -> None:
    status, body = infer(client, {"inputs": [tensor_body]})
    assert status == 400, body
    assert set(body) == {"error"} and says in body["error"], body


def test_malformed_requests_are_400_in_the_protocols_format(client: TestClient) -> None:
    response = client.post("/v2/models/demo/infer", content=b"{not json")
    assert response.status_code == 400 and "not valid JSON" in response.json()["error"]
    status, body = infer(client, {"inputs": []})
    assert status == 400 and body["error"].startswith("inputs:")
    two = [tensor([[1.0] * N]), tensor([[1.0] * N])]
    status, body = infer(client, {"inputs": two})
    assert status == 400 and "2 inputs" in body["error"]
    status, body = infer(client, {"inputs": [tensor([[1.0] * N])], "outputs": [{"name": "proba"}]})
    assert status == 400 and "unknown output 'proba'" in body["error"]


def test_v1_errors_keep_problem_details(client: TestClient) -> None:
    response = client.post("/v1/jobs", json={"data": [[1.0]], "model": "nope"})
    assert response.headers["content-type"] == "application/problem+json"


def test_models_need_a_key_like_v1_and_probes_do_not(
    client: TestClient, state: GatewayState, monkeypatch: pytest.MonkeyPatch
) -> None:
    keyed = state.settings.model_copy(update={"api_keys": [hashlib.sha256(b"k").hexdigest()]})
    monkeypatch.setattr(state, "settings", keyed)
    response = client.post("/v2/models/demo/infer", json={"inputs": [tensor([[1.0] * N])]})
    assert response.status_code == 401 and "API key" in response.json()["error"]
    assert response.headers["www-authenticate"] == "Bearer"
    assert client.get("/v2/models/demo").status_code == 401
    assert client.get("/v2/health/live").status_code == 200
    authorized = {"Authorization": "Bearer k"}
    assert client.get("/v2/models/demo", headers=authorized).status_code == 200


@pytest.mark.parametrize(
    ("model", "example"),
    [
        (ModelInfo, ex.UPLOADED),
        (ModelMetadata, ex.MODEL_METADATA),
        (ModelReady, ex.MODEL_READY),
        (InferResponse, ex.INFER_RESPONSE),
        (InferRequest, ex.INFER_REQUEST),
    ],
)
def test_openapi_examples_match_their_schemas(model: type[BaseModel], example: dict) -> None:
    assert model.model_validate(example).model_dump(mode="json", exclude_unset=True) == example


def test_the_infer_example_answers_what_its_example_says(model_dir: Path) -> None:
    """The docs' numbers are the real demo model's (rounded), not MockModel's."""
    estimator = SklearnModel.load(model_dir / "demo" / "1" / "model.skops")
    rows = np.asarray(ex.ROWS)
    expected = ex.INFER_RESPONSE["outputs"][0]["data"]  # type: ignore[index]
    assert [round(v, 2) for v in estimator.predict(rows).tolist()] == expected


def test_an_alias_in_the_path_names_its_version(client: TestClient) -> None:
    response = client.put("/v1/models/demo/aliases/staging", json={"version": 1})
    assert response.status_code in (200, 201), response.text
    assert client.get("/v2/models/demo@staging").json()["name"] == "demo"
    status, body = infer(client, {"inputs": [tensor([[2.0] * N])]}, "/v2/models/demo@staging/infer")
    assert status == 200, body
    assert body["model_version"] == "1" and body["outputs"][0]["data"] == [2.0 * N]
    status, body = infer(client, {"inputs": [tensor([[2.0] * N])]}, "/v2/models/demo@nope/infer")
    assert status == 404 and "no alias 'nope'" in body["error"]


@pytest.mark.parametrize("version", ["³", "1x", "%C2%B3", "-1"])
def test_a_version_that_is_not_a_number_is_a_404(client: TestClient, version: str) -> None:
    """Found by schemathesis: "³" passes str.isdigit but not int()."""
    for suffix in ("", "/ready"):
        response = client.get(f"/v2/models/demo/versions/{version}{suffix}")
        assert response.status_code == 404, response.text
        assert "unknown" in response.json()["error"]
