"""Open Inference Protocol input tensors as rows of floats, without numpy (the gateway has none).

A tensor of shape `[n, n_features]` holds its values in `data`, flat in row-major order or
nested, or as little-endian bytes after the JSON header (the binary tensor extension, which
`tritonclient` uses by default). Every refusal names the tensor and what is wrong with it.
"""

from __future__ import annotations

import math
import struct
from typing import Any

from shared.errors import InvalidInput
from shared.oip import TensorInput

# datatype -> struct code (standard sizes, little-endian); integers must be JSON integers.
FORMATS = {
    "FP32": "f",
    "FP64": "d",
    "INT8": "b",
    "INT16": "h",
    "INT32": "i",
    "INT64": "q",
    "UINT8": "B",
    "UINT16": "H",
    "UINT32": "I",
    "UINT64": "Q",
}


def rows_of(tensor: TensorInput, n_features: int, binary: bytes | None) -> list[list[float]]:
    """The tensor's values as `n` rows of `n_features` floats; `InvalidInput` otherwise."""
    code = FORMATS.get(tensor.datatype)
    if code is None:
        raise InvalidInput(
            f"input {tensor.name!r}: datatype {tensor.datatype!r} is not supported "
            f"(use one of {', '.join(FORMATS)})"
        )
    shape = tensor.shape
    if len(shape) != 2 or shape[1] != n_features or shape[0] < 1:
        raise InvalidInput(
            f"input {tensor.name!r}: shape {shape} must be [n, {n_features}] (n >= 1 rows of "
            f"the model's {n_features} features)"
        )
    count = shape[0] * shape[1]
    values = _from_binary(tensor, code, count, binary) if binary is not None else None
    if values is None:
        values = _from_json(tensor, code, count)
    return [values[i : i + n_features] for i in range(0, count, n_features)]


def _from_json(tensor: TensorInput, code: str, count: int) -> list[float]:
    if tensor.data is None:
        raise InvalidInput(f"input {tensor.name!r}: no `data` (and no binary_data_size)")
    flat = _flatten(tensor.data, tensor.name)
    if len(flat) != count:
        raise InvalidInput(
            f"input {tensor.name!r}: {len(flat)} values for shape {tensor.shape} ({count} expected)"
        )
    integer = code not in "fd"
    for i, value in enumerate(flat):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise InvalidInput(f"input {tensor.name!r}: value {i} ({value!r}) is not a number")
        if integer and not isinstance(value, int):
            raise InvalidInput(
                f"input {tensor.name!r}: value {i} ({value!r}) is not an integer "
                f"({tensor.datatype})"
            )
    return [float(v) for v in flat]


def _flatten(data: list[Any], name: str) -> list[Any]:
    if not any(isinstance(v, list) for v in data):
        return data
    flat: list[Any] = []
    for row in data:  # nested: one list per row, of numbers
        if not isinstance(row, list) or any(isinstance(v, list) for v in row):
            raise InvalidInput(f"input {name!r}: nest `data` at most as a list of rows")
        flat.extend(row)
    return flat


def _from_binary(tensor: TensorInput, code: str, count: int, binary: bytes) -> list[float] | None:
    size = (tensor.parameters or {}).get("binary_data_size")
    if size is None:
        return None
    expected = count * struct.calcsize("<" + code)
    if size != expected or len(binary) != expected:
        raise InvalidInput(
            f"input {tensor.name!r}: binary_data_size {size} (with {len(binary)} bytes sent) "
            f"does not fit shape {tensor.shape} of {tensor.datatype} ({expected} bytes)"
        )
    values = [float(v) for v in struct.unpack(f"<{count}{code}", binary)]
    if not all(math.isfinite(v) for v in values):
        raise InvalidInput(f"input {tensor.name!r}: values must be finite (no NaN or infinity)")
    return values
