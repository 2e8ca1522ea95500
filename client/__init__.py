"""The Python SDK of mlqueue (and, in `client.cli`, the `mlqueue` command): HTTP only.

from client import Client

with Client("http://127.0.0.1:8000", api_key="...") as mlq:
    predictions = mlq.predict([[0.038, 0.051, ...]])
"""

from client._shared import Retry, Step
from client.aio import AsyncClient
from client.errors import (
    ApiError,
    Conflict,
    InvalidInput,
    JobFailed,
    MlqueueError,
    NotFound,
    PayloadTooLarge,
    RateLimited,
    Unauthorized,
    Unavailable,
    Unreachable,
    UploadCutOff,
    WaitTimeout,
    Where,
)
from client.models import (
    AliasChange,
    Aliases,
    AliasTarget,
    CsvErrors,
    History,
    Job,
    JobAccepted,
    JobError,
    JobPage,
    JobResult,
    JobStatus,
    LineError,
    ModelInfo,
    Models,
    Progress,
)
from client.sdk import Client

__all__ = [
    "AliasChange",
    "AliasTarget",
    "Aliases",
    "ApiError",
    "AsyncClient",
    "Client",
    "Conflict",
    "CsvErrors",
    "History",
    "InvalidInput",
    "Job",
    "JobAccepted",
    "JobError",
    "JobFailed",
    "JobPage",
    "JobResult",
    "JobStatus",
    "LineError",
    "MlqueueError",
    "ModelInfo",
    "Models",
    "NotFound",
    "PayloadTooLarge",
    "Progress",
    "RateLimited",
    "Retry",
    "Step",
    "Unauthorized",
    "Unavailable",
    "Unreachable",
    "UploadCutOff",
    "WaitTimeout",
    "Where",
]
