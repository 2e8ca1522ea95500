"""The service's error vocabulary, shared by gateway and worker; HTTP codes live in the gateway.

ServiceError
├── InvalidInput        bad rows, columns or values
├── JobNotFound         no such job (or not yours)
├── JobConflict         the job's state forbids the request
│   └── RequestInProgress   a request with the same Idempotency-Key is still running
├── ModelNotFound       no such model or version in the registry
├── ModelError          the artifact cannot be trusted or loaded
├── QueueUnavailable    Redis or the broker cannot be reached, or the queue is full
└── RateLimited         the caller's key is over its rate limit
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


class ModelError(ServiceError):
    """Raised when a model artifact fails verification or cannot be loaded."""


class QueueUnavailable(ServiceError):
    """Raised when Redis cannot be reached or the queue refuses more work."""

    def __init__(self, message: str, retry_after: int = 5, **details: Any) -> None:
        super().__init__(message, **details)
        self.retry_after = retry_after


class RateLimited(ServiceError):
    """Raised when the caller's API key has spent its tokens; `fields` are the answer's headers
    (`Retry-After`, `RateLimit`, `RateLimit-Policy`)."""

    def __init__(self, message: str, fields: dict[str, str], **details: Any) -> None:
        super().__init__(message, **details)
        self.fields = fields

    @property
    def headers(self) -> dict[str, str]:
        return self.fields
