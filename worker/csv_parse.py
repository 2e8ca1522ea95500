"""Parse one CSV chunk into a float64 matrix: pandas' C engine first, an exact parser on doubt.

The fast path takes chunks without quotes and trusts pandas only when its answer is provably
whole: as many rows as the gateway counted, every line with exactly `width - 1` commas (pandas
itself refuses a line with too many fields, so the comma total catches one with too few) and every
feature finite and within float32's range. Anything else (a bad value, a quote, pandas refusing)
goes to the exact parser, which walks the records in Python and names the line and column of
each error.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
import pandas as pd

from shared.chunks import BLANK, iter_records
from shared.csvformat import Layout, rows_from
from shared.features import FLOAT32_MAX

Matrix = npt.NDArray[np.float64]


@dataclass
class Parsed:
    """The good rows of a chunk, their ids, and the errors of its bad lines (sorted by line)."""

    X: Matrix
    ids: list[str] | None
    errors: list[dict[str, object]] = field(default_factory=list)


def parse_chunk(data: bytes, first_line: int, layout: Layout, rows: int) -> Parsed:
    """Parse a chunk of `rows` non-blank records starting on line `first_line` of the file."""
    fast = parse_fast(data, layout, rows)
    return fast if fast is not None else parse_exact(data, first_line, layout)


def parse_fast(data: bytes, layout: Layout, rows: int) -> Parsed | None:
    """pandas' C parser, or None when its answer cannot be trusted as it is."""
    if b'"' in data:
        return None
    dtype: dict[int, type] = {c: str for c in range(layout.width)}
    dtype.update({c: np.float64 for c in layout.feature_columns})
    try:
        frame = pd.read_csv(
            io.BytesIO(data),
            header=None,
            names=list(range(layout.width)),
            index_col=False,
            dtype=dtype,
            na_filter=False,
            engine="c",
            encoding="utf-8",
        )
    except Exception:  # any refusal (bad value, bad UTF-8, ragged line): the exact parser says why
        return None
    if len(frame) != rows or data.count(b",") != (layout.width - 1) * rows:
        return None
    X = frame[layout.feature_columns].to_numpy(dtype=np.float64)
    if not (np.abs(X) <= FLOAT32_MAX).all():  # NaN compares false too
        return None
    ids = None if layout.id_column is None else frame[layout.id_column].astype(str).tolist()
    return Parsed(X, ids)


def parse_exact(data: bytes, first_line: int, layout: Layout) -> Parsed:
    """Every record parsed by the csv module: slow, exact, with line and column of each error."""
    numbered: list[tuple[int, list[str]]] = []
    errors: list[dict[str, object]] = []
    for start, end, line_offset, _ in iter_records(data):
        if BLANK.fullmatch(data, start, end):
            continue
        line = first_line + line_offset
        try:
            text = data[start:end].decode("utf-8").removesuffix("\r")
        except UnicodeDecodeError as exc:
            errors.append({"line": line, "msg": f"not UTF-8 text (byte {exc.start + 1})"})
            continue
        try:
            numbered.append((line, next(csv.reader([text]), [])))
        except csv.Error as exc:
            errors.append({"line": line, "msg": f"malformed CSV: {exc}"})
    good, ids, bad = rows_from(numbered, layout)
    errors = sorted(errors + bad, key=lambda e: int(str(e["line"])))
    X = np.asarray(good, dtype=np.float64).reshape(len(good), len(layout.feature_columns))
    return Parsed(X, ids if layout.id_column is not None else None, errors)
