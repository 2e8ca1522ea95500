"""Open Inference Protocol (KServe V2) wire schemas: the REST bodies of `/v2`.

Only what mlqueue serves: one input tensor of shape `[n, n_features]`, one output `predict`.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

INPUT_NAME = "input-0"
OUTPUT_NAME = "predict"


class TensorInput(BaseModel):
    """An input tensor: `data` flat in row-major order (or nested), or `binary_data_size` bytes
    after the JSON header (the binary tensor extension)."""

    name: str = Field(max_length=200)
    shape: list[int] = Field(min_length=1, max_length=8)
    datatype: str = Field(max_length=16)
    parameters: dict[str, Any] | None = None
    data: list[Any] | None = None


class RequestedOutput(BaseModel):
    """An output the client asks for (only `predict` exists)."""

    name: str = Field(max_length=200)
    parameters: dict[str, Any] | None = None


class InferRequest(BaseModel):
    """`POST /v2/models/{name}[/versions/{v}]/infer`."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "id": "42",
                    "inputs": [
                        {"name": INPUT_NAME, "shape": [1, 3], "datatype": "FP64", "data": [1, 2, 3]}
                    ],
                }
            ]
        }
    )

    id: str | None = Field(None, max_length=200)
    parameters: dict[str, Any] | None = None
    inputs: list[TensorInput] = Field(min_length=1, max_length=16)
    outputs: list[RequestedOutput] | None = Field(None, max_length=16)


class TensorOutput(BaseModel):
    """An output tensor."""

    name: str
    shape: list[int]
    datatype: str
    data: list[float]


class InferResponse(BaseModel):
    """The answer of `infer`: `predict`, FP64, one value per input row."""

    model_name: str
    model_version: str
    id: str | None = None
    outputs: list[TensorOutput]


class TensorMetadata(BaseModel):
    """A tensor's name, datatype and shape (-1: any size)."""

    name: str
    datatype: str
    shape: list[int]


class ModelMetadata(BaseModel):
    """`GET /v2/models/{name}[/versions/{v}]`."""

    name: str
    versions: list[str]
    platform: str
    inputs: list[TensorMetadata]
    outputs: list[TensorMetadata]


class ServerLive(BaseModel):
    """`GET /v2/health/live`."""

    live: bool


class ServerReady(BaseModel):
    """`GET /v2/health/ready`."""

    ready: bool


class ModelReady(BaseModel):
    """`GET /v2/models/{name}[/versions/{v}]/ready`."""

    name: str
    ready: bool


class ProtocolError(BaseModel):
    """Every `/v2` error: the protocol's format, not problem details."""

    error: str
