"""The CSV dialect mlqueue reads: header detection, column mapping, line-numbered errors.

- A first line whose cells are exactly the model's feature names (any order, plus the
  `id_column` if one is named) is a header, even when the names look numeric (years, say); so is
  a first line with any non-numeric cell. Header names are matched to the model's feature names
  in any order; an `id_column` is passed through; other names are an error unless `ignore_extra`
  is set; a name given twice is an error.
- Without a header a line has exactly n_features values (the id column first when one is named;
  its values may be any text).
- UTF-8 with or without BOM, LF or CRLF, quoted fields, blank lines and a missing final newline.
Line numbers are 1-based lines of the file; columns are 1-based and also given by name.
"""

from __future__ import annotations

import codecs
import csv
import io
import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Final

from shared.errors import InvalidInput
from shared.features import excerpt, value_problem

MAX_REPORTED = 5
MAX_NAMES_LISTED: Final = 5
"""Header names quoted in one message (the count of the others is given)."""


def names_listed(names: Sequence[str]) -> str:
    """Header names as quoted in a message: a few, each cut, and how many more."""
    shown = [excerpt(n) for n in names[:MAX_NAMES_LISTED]]
    more = len(names) - len(shown)
    return f"{shown}" + (f" (and {more} more)" if more else "")


@dataclass(frozen=True)
class Layout:
    """Where each feature (and the id) sits in a line of the file."""

    feature_columns: list[int]
    id_column: int | None
    width: int
    has_header: bool
    names: list[str] = field(default_factory=list)


def is_number(cell: str) -> bool:
    """Whether a cell parses as a float."""
    try:
        float(cell)
    except ValueError:
        return False
    return True


def layout_for(
    first: Sequence[str], features: Sequence[str], id_column: str | None, ignore_extra: bool
) -> Layout:
    """The layout of a file whose first line is `first` (a header or a data line)."""
    cells = [c.strip() for c in first]
    n = len(features)
    # Without a header the id column comes first, and ids need not be numbers.
    values = cells[1:] if id_column and len(cells) == n + 1 else cells
    if not _is_feature_names(cells, features, id_column) and all(is_number(c) for c in values):
        # no header: positional
        width = n + (1 if id_column else 0)
        names = ([id_column] if id_column else []) + list(features)
        return Layout(list(range(width - n, width)), 0 if id_column else None, width, False, names)
    position = {name: i for i, name in enumerate(cells)}
    missing = [f for f in features if f not in position]
    if missing:
        raise InvalidInput(
            f"line 1: header lacks the model's features {missing}; expected "
            f"{list(features)} in any order (or no header and {n} columns)",
            line=1,
            missing=missing,
        )
    if id_column is not None and id_column not in position:
        raise InvalidInput(f"line 1: header has no id column {excerpt(id_column)!r}", line=1)
    duplicates = sorted(name for name, count in Counter(cells).items() if count > 1)
    if duplicates:
        raise InvalidInput(
            f"line 1: header names {names_listed(duplicates)} appear more than once; each column "
            "needs its own name",
            line=1,
            duplicates=duplicates,
        )
    extra = [c for c in cells if c not in features and c != id_column]
    if extra and not ignore_extra:
        raise InvalidInput(
            f"line 1: unexpected columns {names_listed(extra)}; remove them or set "
            "ignore_extra=true",
            line=1,
            extra=[excerpt(c) for c in extra[:MAX_NAMES_LISTED]],
        )
    return Layout(
        [position[f] for f in features],
        position[id_column] if id_column is not None else None,
        len(cells),
        True,
        cells,
    )


def _is_feature_names(cells: Sequence[str], features: Sequence[str], id_column: str | None) -> bool:
    """Whether `cells` name exactly the features (any order, repeats allowed: they are refused
    later with a clear message), plus the id column when one is named."""
    names = set(features) | ({id_column} if id_column else set())
    return set(cells) == names or (id_column is not None and set(cells) == set(features))


def rows_from(
    lines: Iterable[tuple[int, list[str]]], layout: Layout
) -> tuple[list[list[float]], list[str], list[dict[str, object]]]:
    """Features, ids and errors of numbered data lines (errors carry line, column, name, msg)."""
    rows: list[list[float]] = []
    ids: list[str] = []
    errors: list[dict[str, object]] = []
    for number, cells in lines:
        row, problem = _parse_line(cells, layout)
        if problem is None:
            rows.append(row)
            if layout.id_column is not None:
                ids.append(cells[layout.id_column])
        else:
            errors.append({"line": number, **problem})
    return rows, ids, errors


def _parse_line(cells: list[str], layout: Layout) -> tuple[list[float], dict[str, object] | None]:
    if len(cells) != layout.width:
        return [], {"msg": f"expected {layout.width} columns, got {len(cells)}"}
    row = []
    for col in layout.feature_columns:
        cell = cells[col].strip()
        name = excerpt(layout.names[col]) if col < len(layout.names) else str(col + 1)
        try:
            value = float(cell)
        except ValueError:
            what = "empty value" if not cell else f"non-numeric value {excerpt(cell)!r}"
            return [], {"column": col + 1, "name": name, "msg": what}
        problem = value_problem(value)
        if problem:
            # A cell too long for float (digits past 1e308) reads as infinity: quote the cell.
            msg = problem if math.isfinite(value) else f"non-finite value {excerpt(cell)!r}"
            return [], {"column": col + 1, "name": name, "msg": msg}
        row.append(value)
    return row, None


def describe(errors: Sequence[dict[str, object]]) -> str:
    """A one-line summary of the first errors, e.g. `line 3, column 2 (sex): empty value`."""
    parts = []
    for e in errors[:MAX_REPORTED]:
        place = f"line {e['line']}" + (
            f", column {e['column']} ({e['name']})" if "column" in e else ""
        )
        parts.append(f"{place}: {e['msg']}")
    more = f" (and {len(errors) - MAX_REPORTED} more)" if len(errors) > MAX_REPORTED else ""
    return "; ".join(parts) + more


TEXT_CHECK_BYTES: Final = 64 * 1024
"""How much of a file's start `check_text` reads."""


def check_text(head: bytes, final: bool) -> None:
    """Refuse a file that is not UTF-8 text, from its first bytes (`final`: that is all of it;
    otherwise a character cut at the end of `head` is not an error)."""
    head = head[:TEXT_CHECK_BYTES]
    if b"\x00" in head:
        raise InvalidInput("the file is not text (it contains NUL bytes); upload a CSV file")
    try:
        codecs.getincrementaldecoder("utf-8")().decode(head, final=final)
    except UnicodeDecodeError as exc:
        raise _not_utf8(exc) from exc


def decode(data: bytes) -> str:
    """The text of an uploaded file held whole; anything but UTF-8 text is refused."""
    check_text(data, final=False)
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise _not_utf8(exc) from exc


def _not_utf8(exc: UnicodeDecodeError) -> InvalidInput:
    return InvalidInput(f"the file is not UTF-8 text (byte {exc.start + 1}); upload a CSV file")


def parse_small(
    data: bytes, features: Sequence[str], max_rows: int, id_column: str | None = None
) -> tuple[list[list[float]], list[str]]:
    """Rows (and ids) of a whole small CSV file held in memory; `InvalidInput` on any error."""
    reader = csv.reader(io.StringIO(decode(data), newline=""))
    numbered = ((reader.line_num, cells) for cells in reader if any(c.strip() for c in cells))
    first = next(numbered, None)
    if first is None:
        raise InvalidInput("the file is empty: expected a CSV with one row per sample")
    layout = layout_for(first[1], features, id_column, ignore_extra=False)
    data_lines = numbered if layout.has_header else _chain(first, numbered)
    rows, ids, errors = rows_from(data_lines, layout)
    if errors:
        raise InvalidInput(describe(errors), errors=errors[:MAX_REPORTED])
    if not rows:
        raise InvalidInput("the file has a header but no data lines")
    if len(rows) > max_rows:
        raise InvalidInput(f"{len(rows)} rows exceed the limit of {max_rows}; use /v1/jobs/csv")
    return rows, ids


def _chain(
    first: tuple[int, list[str]], rest: Iterable[tuple[int, list[str]]]
) -> Iterable[tuple[int, list[str]]]:
    yield first
    yield from rest
