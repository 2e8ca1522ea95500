"""OpenAPI examples of the model upload and the V2 protocol routes (as `gateway.examples`)."""

from __future__ import annotations

from typing import Any

from gateway.examples import MODELS, answer

_DEMO: dict[str, Any] = MODELS["models"][0]  # type: ignore[assignment]
UPLOADED: dict[str, Any] = {
    **_DEMO,
    "version": "2",
    "metrics": {},
    "framework_version": "1.9.1",
    "artifact": "model.skops",
}
UPLOAD_FORM = {
    "summary": "A model saved with skops.io.dump",
    "value": {"file": "(the bytes of model.skops)"},
}
LIVE = {"live": True}
SERVER_READY = {"ready": True}
MODEL_METADATA = {
    "name": "demo",
    "versions": ["1", "2"],
    "platform": "scikit-learn",
    "inputs": [{"name": "input-0", "datatype": "FP64", "shape": [-1, 10]}],
    "outputs": [{"name": "predict", "datatype": "FP64", "shape": [-1]}],
}
MODEL_READY = {"name": "demo", "ready": True}
ROWS = [
    [0.04, 0.05, 0.06, 0.02, -0.04, -0.03, -0.04, -0.002, 0.02, -0.02],
    [-0.002, -0.04, -0.05, -0.03, -0.008, -0.02, 0.07, -0.04, -0.07, -0.09],
]
INFER_REQUEST = {
    "id": "42",
    "inputs": [
        {
            "name": "input-0",
            "shape": [2, 10],
            "datatype": "FP64",
            "data": [v for row in ROWS for v in row],
        },
    ],
}
INFER_RESPONSE = {
    "model_name": "demo",
    "model_version": "1",
    "id": "42",
    "outputs": [{"name": "predict", "shape": [2], "datatype": "FP64", "data": [179.05, 80.67]}],
}


def request_body(media: str, schema: dict[str, Any], examples: dict[str, Any]) -> dict[str, Any]:
    """An `openapi_extra` request body of one media type, with named examples."""
    content: dict[str, Any] = {"schema": schema, "examples": examples}
    return {"requestBody": {"required": True, "content": {media: content}}}


__all__ = ["answer"]
