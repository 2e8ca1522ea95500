"""The Open Inference Protocol (KServe V2) on the real system, driven by a real third-party
client: `tritonclient.http` (NVIDIA Triton's Python client). Predictions are compared with the
estimator's own `predict` on the same rows."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tritonclient.http as triton
from tritonclient.utils import InferenceServerException

from tests.integration.conftest import API_KEYS, System
from worker.sklearn_model import SklearnModel

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def estimator(model_dir: Path) -> object:
    return SklearnModel.load(model_dir / "demo" / "1" / "model.skops", fast=False).estimator


@pytest.fixture
def client(system: System) -> triton.InferenceServerClient:
    client = triton.InferenceServerClient(url=system.base_url.removeprefix("http://"))
    yield client
    client.close()


def test_health_metadata_and_readiness(client: triton.InferenceServerClient) -> None:
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("demo") and client.is_model_ready("demo", "1")
    assert not client.is_model_ready("no-such-model")
    meta = client.get_model_metadata("demo")
    assert meta["name"] == "demo" and "1" in meta["versions"]
    assert meta["inputs"] == [{"name": "input-0", "datatype": "FP64", "shape": [-1, 10]}]
    assert meta["outputs"] == [{"name": "predict", "datatype": "FP64", "shape": [-1]}]


def test_json_fp64_infer_equals_model_predict(
    client: triton.InferenceServerClient, estimator: object, diabetes_rows: list[list[float]]
) -> None:
    X = np.asarray(diabetes_rows[:25], dtype=np.float64)
    tensor = triton.InferInput("input-0", list(X.shape), "FP64")
    tensor.set_data_from_numpy(X, binary_data=False)
    wanted = triton.InferRequestedOutput("predict", binary_data=False)
    result = client.infer("demo", [tensor], outputs=[wanted], request_id="req-7")
    assert result.get_response()["id"] == "req-7"
    assert result.get_response()["model_version"] == "1"
    assert result.as_numpy("predict").tolist() == estimator.predict(X).tolist()  # type: ignore[attr-defined]


def test_binary_fp32_infer_of_a_version_equals_model_predict(
    client: triton.InferenceServerClient, estimator: object, diabetes_rows: list[list[float]]
) -> None:
    X = np.asarray(diabetes_rows[100:140], dtype=np.float32)
    tensor = triton.InferInput("input-0", list(X.shape), "FP32")
    tensor.set_data_from_numpy(X)  # tritonclient's default: the binary tensor extension
    result = client.infer("demo", [tensor], model_version="1")
    expected = estimator.predict(X.astype(np.float64))  # type: ignore[attr-defined]
    assert result.as_numpy("predict").tolist() == expected.tolist()


def test_int64_rows_equal_model_predict(
    client: triton.InferenceServerClient, estimator: object
) -> None:
    X = np.arange(30, dtype=np.int64).reshape(3, 10) - 15
    tensor = triton.InferInput("input-0", [3, 10], "INT64")
    tensor.set_data_from_numpy(X, binary_data=False)
    result = client.infer("demo", [tensor], outputs=[triton.InferRequestedOutput("predict", False)])
    expected = estimator.predict(X.astype(np.float64))  # type: ignore[attr-defined]
    assert result.as_numpy("predict").tolist() == expected.tolist()


@pytest.mark.parametrize(
    ("shape", "datatype", "says"),
    [([2, 3], "FP64", "must be [n, 10]"), ([1, 10], "FP16", "'FP16' is not supported")],
)
def test_bad_tensors_raise_the_servers_message_in_the_client(
    client: triton.InferenceServerClient, shape: list[int], datatype: str, says: str
) -> None:
    X = np.ones(shape, dtype=np.float16 if datatype == "FP16" else np.float64)
    tensor = triton.InferInput("input-0", shape, datatype)
    tensor.set_data_from_numpy(X, binary_data=False)
    with pytest.raises(InferenceServerException, match=says.replace("[", r"\[")) as info:
        client.infer("demo", [tensor])
    assert info.value.status() == "400"


def test_an_unknown_model_is_a_404_error_in_the_client(
    client: triton.InferenceServerClient,
) -> None:
    tensor = triton.InferInput("input-0", [1, 10], "FP64")
    tensor.set_data_from_numpy(np.ones((1, 10)), binary_data=False)
    with pytest.raises(InferenceServerException, match="unknown model") as info:
        client.infer("no-such-model", [tensor])
    assert info.value.status() == "404"


def test_models_need_an_api_key_and_tritonclient_sends_it(
    keyed_system: System, estimator: object, diabetes_rows: list[list[float]]
) -> None:
    client = triton.InferenceServerClient(url=keyed_system.base_url.removeprefix("http://"))
    try:
        assert client.is_server_live()  # the probes need no key
        X = np.asarray(diabetes_rows[:3])
        tensor = triton.InferInput("input-0", list(X.shape), "FP64")
        tensor.set_data_from_numpy(X)
        with pytest.raises(InferenceServerException, match="API key") as info:
            client.infer("demo", [tensor])
        assert info.value.status() == "401"
        headers = {"Authorization": f"Bearer {API_KEYS[0]}"}
        result = client.infer("demo", [tensor], headers=headers)
        assert result.as_numpy("predict").tolist() == estimator.predict(X).tolist()  # type: ignore[attr-defined]
    finally:
        client.close()
