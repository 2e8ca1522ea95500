"""The service's error vocabulary, shared by gateway and worker; HTTP codes live in the gateway.

ServiceError
├── InvalidInput        bad rows, columns or values
│   ├── ModelRejected   an uploaded model file refused: untrusted types, wrong n_features...
│   └── UnsupportedModelFormat  an uploaded file that is not a skops file (or a refused pickle)
├── MalformedRequest    a body that cannot be parsed at all (a broken multipart form)
├── JobNotFound         no such job (or not yours)
├── JobConflict         the job's state forbids the request
│   └── RequestInProgress   a request with the same Idempotency-Key is still running
├── ModelNotFound       no such model or version in the registry
├── ModelError          the artifact cannot be trusted or loaded
├── UploadStalled       an upload sent nothing for too long
├── RateLimited         an API key is over one of its limits or quotas (retry after a while)
└── QueueUnavailable    Redis or the broker cannot be reached, or the queue is full
    └── NotReplicated   no Redis replica confirmed a write in time (Sentinel deployments)
"""

from __future__ import annotations

from typing import Any


class ServiceError(Exception):
    """Base of every error the service reports to a client."""

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = details

    @property
    def headers(self) -> dict[str, str]:
        """HTTP headers the answer must carry (Retry-After, rate-limit fields)."""
        return {}


class InvalidInput(ServiceError):
    """Raised when submitted rows are malformed: the message names the row and column."""


class ModelRejected(InvalidInput):
    """Raised when an uploaded model is refused: it holds untrusted types, has the wrong number
    of features, or fails its smoke prediction; the message says which."""


class UnsupportedModelFormat(InvalidInput):
    """Raised when an uploaded model file is in a format that is not accepted (not skops, or a
    pickle while pickle uploads are off)."""


class MalformedRequest(ServiceError):
    """Raised when a request body cannot be parsed at all: the message says what is wrong."""


class JobNotFound(ServiceError):
    """Raised when a job id is unknown, expired, or belongs to another client."""


class JobConflict(ServiceError):
    """Raised when a job's state does not allow the request (cancel a finished job, ...)."""


class RequestInProgress(JobConflict):
    """Raised when a request with the same Idempotency-Key has not finished yet."""

    @property
    def headers(self) -> dict[str, str]:
        return {"Retry-After": "1"}


class ModelNotFound(ServiceError):
    """Raised when a model name or version is not in the registry."""


class AliasNotFound(ServiceError):
    """Raised when a model or alias named in a URL path does not exist."""


class ModelError(ServiceError):
    """Raised when a model artifact fails verification or cannot be loaded."""


class UploadStalled(ServiceError):
    """Raised when an upload sends no bytes for `upload_idle_timeout` seconds."""


class RateLimited(ServiceError):
    """Raised when an API key holds too many uploads, long polls or event streams, too many
    stored bytes, or has spent its rate-limit tokens; `fields` are extra answer headers
    (`RateLimit`, `RateLimit-Policy`, a precise `Retry-After`)."""

    def __init__(
        self,
        message: str,
        retry_after: int = 5,
        fields: dict[str, str] | None = None,
        **details: Any,
    ) -> None:
        super().__init__(message, **details)
        self.retry_after = retry_after
        self.fields = fields or {}

    @property
    def headers(self) -> dict[str, str]:
        return self.fields


class QueueUnavailable(ServiceError):
    """Raised when Redis cannot be reached or the queue refuses more work."""

    def __init__(self, message: str, retry_after: int = 5, **details: Any) -> None:
        super().__init__(message, **details)
        self.retry_after = retry_after


class NotReplicated(QueueUnavailable):
    """Raised when no Redis replica confirmed a write in time: a failover could lose it, so the
    promise it was for (an accepted job, an acknowledged message) is not made."""
