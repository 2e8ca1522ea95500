"""Examples for the OpenAPI docs at `/docs`: a request and an answer per endpoint, real shapes."""

from __future__ import annotations

from typing import Any

from shared.schemas import EXAMPLE_ROW

JOB_ID = "0b6f9c1e-5d2a-4f0e-9a57-3c1d2e4f6a80"
OTHER_ROW = [-0.002, -0.045, -0.052, -0.026, -0.009, -0.019, 0.074, -0.039, -0.068, -0.092]
TIMES = {
    "created_at": "2026-11-25T20:00:00.120000Z",
    "started_at": "2026-11-25T20:00:00.180000Z",
    "finished_at": "2026-11-25T20:00:00.260000Z",
}

SUBMIT_BODIES: dict[str, Any] = {
    "rows": {
        "summary": "Two rows for the default model",
        "value": {"data": [EXAMPLE_ROW, OTHER_ROW]},
    },
    "pinned": {
        "summary": "A pinned model version",
        "value": {"data": [EXAMPLE_ROW], "model": "demo:1"},
    },
    "invalid": {
        "summary": "Invalid: a wrong feature count (422 naming the row)",
        "value": {"data": [[0.1, 0.2, 0.3]]},
    },
}
LEGACY_BODIES: dict[str, Any] = {"rows": SUBMIT_BODIES["rows"]}
HEADER = "age,sex,bmi,bp,s1,s2,s3,s4,s5,s6"
CSV_TEXT = "\n".join([HEADER, *(",".join(map(str, r)) for r in (EXAMPLE_ROW, OTHER_ROW))]) + "\n"
CSV_FORM = {
    "summary": "A CSV with the model's feature names as header",
    "value": {"file": CSV_TEXT},
}

ACCEPTED = {
    "job_id": JOB_ID,
    "status": "queued",
    "model": "demo",
    "n_rows": 2,
    "location": f"/v1/jobs/{JOB_ID}",
}
VIEW_RUNNING = {
    "job_id": JOB_ID,
    "status": "running",
    "kind": "json",
    "model": "demo",
    "version": "1",
    "n_rows": 2,
    "created_at": TIMES["created_at"],
    "started_at": TIMES["started_at"],
    "finished_at": None,
    "error": None,
    "progress": None,
}
VIEW_SUCCEEDED = {**VIEW_RUNNING, "status": "succeeded", **TIMES}
VIEW_CSV = {
    **VIEW_RUNNING,
    "kind": "csv",
    "n_rows": None,
    "progress": {
        "rows_done": 150_000,
        "rows_total": 1_000_000,
        "chunks_done": 3,
        "chunks_total": 20,
        "percent": 15.0,
    },
}
VIEW_CANCELLED = {**VIEW_RUNNING, "status": "cancelled", "finished_at": TIMES["finished_at"]}
RESULT = {
    "job_id": JOB_ID,
    "status": "succeeded",
    "model": "demo",
    "version": "1",
    "data": [206.47, 68.92],
}
MODELS = {
    "default": "demo",
    "models": [
        {
            "name": "demo",
            "version": "1",
            "created_at": "2026-11-25T19:00:00Z",
            "feature_names": ["age", "sex", "bmi", "bp", "s1", "s2", "s3", "s4", "s5", "s6"],
            "n_features": 10,
            "framework": "scikit-learn",
            "framework_version": "1.6.1",
            "estimator": "RandomForestRegressor",
            "metrics": {"r2": 0.44, "mae": 44.1},
            "sha256": "9c1b4f0e" * 8,
            "artifact": "model.skops",
        }
    ],
}
READY = {
    "status": "ready",
    "checks": {"redis": "ok", "workers": 1, "queue_depth": 0, "model": "demo:1"},
    "reasons": [],
}
NOT_READY = {
    "status": "not ready",
    "checks": {"redis": "ok", "workers": 0, "queue_depth": 12, "model": "demo:1"},
    "reasons": ["no worker has sent a heartbeat recently"],
}
LEGACY = {"data": [206.47, 68.92]}
CSV_RESULT = "customer,prediction\nc1,206.47\nc2,68.92\n"
CSV_UPLOAD = {
    "summary": "Options first, then the file (read as a stream); `id_column` passes through",
    "value": {
        "model": "demo:1",
        "id_column": "customer",
        "file": "\n".join(
            [
                "customer," + HEADER,
                *(f"c{i}," + ",".join(map(str, r)) for i, r in ((1, EXAMPLE_ROW), (2, OTHER_ROW))),
            ]
        )
        + "\n",
    },
}
CSV_ACCEPTED = {**ACCEPTED, "n_rows": 1_000_000}
CSV_ERRORS = {
    "job_id": JOB_ID,
    "status": "failed",
    "rows_skipped": 0,
    "errors": [{"line": 4, "column": 3, "name": "bmi", "msg": "non-numeric value 'abc'"}],
}


def problem(status: int, title: str, detail: str) -> dict[str, Any]:
    """An RFC 9457 body as the gateway writes it."""
    return {"type": "about:blank", "title": title, "status": status, "detail": detail}


def answer(description: str, example: Any, media: str = "application/json") -> dict[str, Any]:
    """An OpenAPI response entry carrying `example` (merged into the route's own by FastAPI)."""
    return {"description": description, "content": {media: {"example": example}}}


def answers(description: str, named: dict[str, Any]) -> dict[str, Any]:
    """An OpenAPI JSON response entry with several named examples."""
    values = {name: {"value": value} for name, value in named.items()}
    return {"description": description, "content": {"application/json": {"examples": values}}}


EVENTS = (
    "event: status\r\ndata: "
    '{"job_id":"0b6f...","status":"running","kind":"csv","model":"demo",'
    '"progress":{"rows_done":50000,"rows_total":200000,"percent":25.0}}'
    "\r\nid: 4c1d2e0f9a8b7c6d\r\n\r\n: ping\r\n\r\n"
)

PAGE = {"jobs": [VIEW_CSV, VIEW_SUCCEEDED], "next_cursor": "MTc2NDU0ODgwMC4xMjN8MGI2Zg"}
