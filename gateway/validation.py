"""Checks that depend on the chosen model or on settings (types are checked by the schemas)."""

from __future__ import annotations

from collections.abc import Sequence

from shared.errors import InvalidInput

MAX_REPORTED = 5


def check_rows(rows: Sequence[Sequence[float]], n_features: int, max_rows: int) -> None:
    """Raise `InvalidInput` naming the rows whose width is not `n_features`, or if too many."""
    if len(rows) > max_rows:
        raise InvalidInput(
            f"{len(rows)} rows exceed the limit of {max_rows} rows per job "
            "(split the job, or upload a CSV to /v1/jobs/csv)",
            limit=max_rows,
        )
    errors = [
        {
            "loc": ["body", "data", i],
            "msg": f"row {i} has {len(row)} features, expected {n_features}",
        }
        for i, row in enumerate(rows)
        if len(row) != n_features
    ][:MAX_REPORTED]
    if errors:
        detail = "; ".join(str(e["msg"]) for e in errors)
        raise InvalidInput(f"each row must have {n_features} features: {detail}", errors=errors)
