"""The SDK's exceptions, one per kind of answer a caller handles differently.

MlqueueError
├── Unreachable         the gateway could not be reached (after the retries)
├── WaitTimeout         `wait()` gave up before the job ended
├── JobFailed           the job ended failed or cancelled (`.job` says why)
└── ApiError            the gateway refused: a problem body (`.status`, `.title`, `.detail`)
    ├── InvalidInput        422, `.errors` name the row and column (or CSV line and column)
    ├── Unauthorized        401, a missing or wrong API key
    ├── NotFound            404, no such job (or not yours)
    ├── Conflict            409, the job's state does not allow it
    ├── PayloadTooLarge     413, above the gateway's size limit
    ├── RateLimited         429, `.retry_after` seconds (honoured by the retries)
    └── Unavailable         503, `.retry_after` seconds (retried with backoff)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx

from client.models import Job


class MlqueueError(Exception):
    """Base of every error the SDK raises."""


class Unreachable(MlqueueError):
    """Raised when the gateway cannot be reached (connection refused, timeouts), after retries."""


class WaitTimeout(MlqueueError, TimeoutError):
    """Raised when `wait()` reaches its timeout before the job has finished."""

    def __init__(self, job: Job) -> None:
        super().__init__(f"job {job.job_id} is still {job.status} after the wait")
        self.job = job


class UploadCutOff(MlqueueError):
    """Raised when the gateway closes the connection mid-upload: it refuses a body above its
    limit (413) before reading all of it, so the client only sees its write fail."""


class JobFailed(MlqueueError):
    """Raised for the result of a job that failed or was cancelled."""

    def __init__(self, job: Job) -> None:
        why = job.error.message if job.error else "no reason given"
        super().__init__(f"job {job.job_id} {job.status}: {why}")
        self.job = job


@dataclass(frozen=True)
class Where:
    """One place a 422 names: `row`/`column` of JSON rows (0-based), or `line`/`column` of a CSV
    file (1-based), with the message."""

    msg: str
    row: int | None = None
    line: int | None = None
    column: int | None = None
    name: str | None = None


class ApiError(MlqueueError):
    """Raised when the gateway answers with an error (a problem-details body)."""

    def __init__(self, status: int, title: str, detail: str, body: dict[str, Any]) -> None:
        super().__init__(f"{status} {title}: {detail}")
        self.status = status
        self.title = title
        self.detail = detail
        self.body = body


class InvalidInput(ApiError):
    """Raised on a 422: `errors` says where, `detail` says it in one line."""

    @property
    def errors(self) -> list[Where]:
        """Each place the gateway named, in order."""
        listed = self.body.get("errors")
        if isinstance(listed, list) and listed:
            return [_where(e) for e in listed if isinstance(e, dict)]
        if "line" in self.body:
            return [_where({**self.body, "msg": self.detail})]
        return []


class Unauthorized(ApiError):
    """Raised on a 401: the API key is missing or not valid."""


class NotFound(ApiError):
    """Raised on a 404: no such job, or it belongs to another key."""


class Conflict(ApiError):
    """Raised on a 409: the job's state does not allow the request."""


class PayloadTooLarge(ApiError):
    """Raised on a 413: the body is above the gateway's limit."""


class _RetryLater(ApiError):
    def __init__(
        self, status: int, title: str, detail: str, body: dict[str, Any], retry_after: float | None
    ) -> None:
        super().__init__(status, title, detail, body)
        self.retry_after = retry_after


class RateLimited(_RetryLater):
    """Raised on a 429 that outlasted the retries; `retry_after` is the server's advice."""


class Unavailable(_RetryLater):
    """Raised on a 503 that outlasted the retries (the queue is full or Redis is down)."""


BY_STATUS: dict[int, type[ApiError]] = {
    401: Unauthorized,
    404: NotFound,
    409: Conflict,
    413: PayloadTooLarge,
    422: InvalidInput,
}


def from_response(response: httpx.Response) -> ApiError:
    """The exception for an error answer (its body read already)."""
    try:
        parsed = response.json()
    except ValueError:
        parsed = None
    body: dict[str, Any] = parsed if isinstance(parsed, dict) else {}
    status = response.status_code
    title = str(body.get("title") or response.reason_phrase or "HTTPError")
    detail = str(body.get("detail") or response.text.strip()[:500] or title)
    if status in (429, 503):
        kind = RateLimited if status == 429 else Unavailable
        return kind(status, title, detail, body, retry_after(response))
    return BY_STATUS.get(status, ApiError)(status, title, detail, body)


def retry_after(response: httpx.Response) -> float | None:
    """The `Retry-After` header in seconds (the delay form; an HTTP date is not used by mlqueue)."""
    try:
        return max(0.0, float(response.headers["Retry-After"]))
    except (KeyError, ValueError):
        return None


def _where(error: dict[str, Any]) -> Where:
    msg = str(error.get("msg", ""))
    loc = [p for p in error.get("loc", []) if p != "body"]
    if len(loc) >= 2 and loc[0] == "data" and isinstance(loc[1], int):
        column = loc[2] if len(loc) > 2 and isinstance(loc[2], int) else None
        return Where(msg, row=loc[1], column=column)
    line, column, name = error.get("line"), error.get("column"), error.get("name")
    return Where(
        msg,
        line=line if isinstance(line, int) else None,
        column=column if isinstance(column, int) else None,
        name=str(name) if name is not None else None,
    )
