"""Rows for `mlqueue submit` from a file or stdin: JSON (`[[...], ...]` or `{"data": ...}`) or
CSV (numbers, with an optional header line)."""

from __future__ import annotations

import csv
import io
import json
from typing import Any


class BadRows(ValueError):
    """The text is neither JSON rows nor a CSV of numbers; the message says where."""


def parse(text: str, form: str = "auto") -> list[list[float]]:
    """Rows of numbers from `text` in `form` ("json", "csv", or "auto": JSON if it starts so)."""
    if form == "json" or (form == "auto" and text.lstrip()[:1] in ("[", "{")):
        return _json(text)
    return _csv(text)


def _json(text: str) -> list[list[float]]:
    try:
        body: Any = json.loads(text)
    except json.JSONDecodeError as exc:
        raise BadRows(f"not JSON: {exc}") from exc
    rows = body.get("data") if isinstance(body, dict) else body
    if not isinstance(rows, list):
        raise BadRows('expected a list of rows, or {"data": [...]}')
    return rows  # the gateway checks each value and names the row and column


def _csv(text: str) -> list[list[float]]:
    lines = [line for line in csv.reader(io.StringIO(text)) if line]
    if lines and not _numeric(lines[0]):
        lines = lines[1:]  # a header line
    rows = []
    for number, line in enumerate(lines, start=1):
        try:
            rows.append([float(cell) for cell in line])
        except ValueError as exc:
            raise BadRows(f"CSV row {number}: {exc}") from exc
    if not rows:
        raise BadRows("no rows: expected JSON rows or CSV lines of numbers")
    return rows


def _numeric(cells: list[str]) -> bool:
    try:
        [float(c) for c in cells]
    except ValueError:
        return False
    return True
