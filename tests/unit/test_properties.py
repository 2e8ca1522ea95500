# ruff: noqa: PT017  (a property holds for both outcomes, so the error is inspected in except)
"""Property-based tests of the validators: any input gives a result or a clear, correct error.

Each validator must never raise anything but its own error type, and every row, column or line
that an error names must really be bad.
"""

from __future__ import annotations

import csv
import io
import math
import re
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from gateway.validation import check_rows
from shared.csvformat import parse_small
from shared.errors import InvalidInput
from shared.schemas import PredictRequest
from worker.inference import to_matrix

FEATURES = ["age", "sex", "bmi", "bp"]
N = len(FEATURES)
PROPERTY = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

FLOAT32_MAX = 3.4028235e38  # the bound the issue states, restated here as the oracle
finite = st.floats(-FLOAT32_MAX, FLOAT32_MAX) | st.integers(-(10**6), 10**6)
json_scalar = (
    st.none()
    | st.booleans()
    | st.floats()
    | st.integers()
    | st.text(max_size=5)
    | st.sampled_from(["1.5", "nan", "", "\u202e", "\x00"])
)
json_value = st.recursive(
    json_scalar,
    lambda inner: (
        st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=3), inner, max_size=3)
    ),
    max_leaves=30,
)
# Rows that are mostly well formed, with a few bad cells or widths, so errors are exercised.
cell = finite | json_scalar
row = st.lists(finite, min_size=N, max_size=N) | st.lists(cell, max_size=N + 2)
rows = st.lists(row, min_size=0, max_size=8)


def is_good_value(value: Any) -> bool:
    return type(value) in (int, float) and math.isfinite(value) and abs(value) <= FLOAT32_MAX


def is_good_row(r: Any) -> bool:
    return isinstance(r, list) and len(r) == N and all(is_good_value(v) for v in r)


@PROPERTY
@given(st.lists(st.lists(finite, max_size=N + 2), max_size=12), st.integers(1, 10))
def test_check_rows_names_exactly_bad_widths(data: list[list[float]], max_rows: int) -> None:
    try:
        check_rows(data, N, max_rows)
    except InvalidInput as exc:
        if len(data) > max_rows:
            assert f"exceed the limit of {max_rows}" in exc.message
            return
        named = [e["loc"][2] for e in exc.details["errors"]]
        assert named == [i for i, r in enumerate(data) if len(r) != N][:5]
        for i in named:
            assert f"row {i} has {len(data[i])} features" in exc.message
    else:
        assert len(data) <= max_rows and all(len(r) == N for r in data)


@PROPERTY
@given(st.one_of(rows, json_value), st.one_of(st.just("default"), st.text(max_size=8)))
def test_predict_request_errors_point_at_bad_cells(data: Any, model: str) -> None:
    try:
        request = PredictRequest.model_validate({"data": data, "model": model})
    except ValidationError as exc:
        for error in exc.errors():
            loc = error["loc"]
            if loc[0] == "model":
                # A name is letters, digits, "_.-", never starting with a dot (".." is a path).
                good = re.fullmatch(r"[A-Za-z0-9_.-]+(:[A-Za-z0-9_.-]+)?", model)
                assert not good or model.startswith(".") or len(model) > 200
            elif len(loc) >= 3 and isinstance(loc[2], int):
                assert not is_good_value(data[loc[1]][loc[2]])
            elif len(loc) == 2:
                assert not isinstance(data[loc[1]], list)
            else:
                assert not (isinstance(data, list) and data)
    else:
        assert all(all(is_good_value(v) for v in r) for r in request.data)
        assert request.data == data


@PROPERTY
@given(st.one_of(rows, json_value))
def test_to_matrix_names_only_bad_rows_and_columns(data: Any) -> None:
    try:
        matrix = to_matrix(data, N)
    except InvalidInput as exc:
        if not isinstance(data, list) or not data:
            assert exc.message == "rows must be a non-empty list of rows"
            return
        named = [int(m) for m in re.findall(r"row (\d+):", exc.message)]
        assert named == [i for i, r in enumerate(data) if not is_good_row(r)][:5]
        for problem in exc.details["errors"]:
            found = re.match(r"row (\d+): column (\d+):", problem)
            if found:
                i, j = int(found[1]), int(found[2])
                assert not is_good_value(data[i][j])
                assert all(is_good_value(v) for v in data[i][:j])
    else:
        assert matrix.shape == (len(data), N)
        assert all(is_good_row(r) for r in data)


csv_cell = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False).map(repr),
    st.integers(-999, 999).map(str),
    st.sampled_from(["", "x", "nan", "inf", " 1 ", "1e400", "4e38", "\u00e9", '"', "1,5"]),
)
csv_grid = st.lists(st.lists(csv_cell, min_size=1, max_size=N + 1), min_size=1, max_size=8)


def good_csv_row(cells: list[str]) -> bool:
    if len(cells) != N:
        return False
    try:
        return all(abs(float(c.strip())) <= FLOAT32_MAX for c in cells)
    except ValueError:
        return False


@PROPERTY
@given(csv_grid, st.booleans())
def test_csv_errors_name_exactly_the_bad_lines(grid: list[list[str]], header: bool) -> None:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    if header:
        writer.writerow(list(reversed(FEATURES)))
    writer.writerows(grid)
    first = 2 if header else 1
    lines = [(n, r) for n, r in enumerate(grid, first) if any(c.strip() for c in r)]
    try:
        parsed, _ = parse_small(out.getvalue().encode(), FEATURES, max_rows=100)
    except InvalidInput as exc:
        if not lines:
            assert "empty" in exc.message or "no data lines" in exc.message
        elif not header and not all(_is_number(c.strip()) for c in lines[0][1]):
            assert exc.message.startswith("line 1: header lacks")  # taken as a header
        else:
            bad = [n for n, r in lines if not good_csv_row(r)]
            assert [e["line"] for e in exc.details["errors"]] == bad[:5]
            for e in exc.details["errors"]:
                assert f"line {e['line']}" in exc.message or len(bad) > 5
    else:
        assert lines and all(good_csv_row(r) for _, r in lines)
        expected = [[float(c) for c in r] for _, r in lines]
        assert parsed == ([e[::-1] for e in expected] if header else expected)


def _is_number(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True


@PROPERTY
@given(st.binary(max_size=300))
def test_csv_of_any_bytes_is_rows_or_invalid_input(data: bytes) -> None:
    try:
        parsed, _ = parse_small(data, FEATURES, max_rows=100)
    except InvalidInput as exc:
        assert exc.message
    else:
        assert all(len(r) == N and all(abs(v) <= FLOAT32_MAX for v in r) for r in parsed)


@pytest.mark.parametrize("depth", [100, 10_000])
def test_deeply_nested_data_is_a_validation_error(depth: int) -> None:
    nested: Any = 1.0
    for _ in range(depth):
        nested = [nested]
    with pytest.raises(ValidationError):
        PredictRequest.model_validate({"data": nested})
    with pytest.raises(InvalidInput):
        to_matrix(nested, N)
