"""What the gateway answers, as typed objects.

The client is HTTP-only and never imports the server (`shared/` pulls Celery and Redis), so these
mirror the wire schemas of `shared/schemas.py`; tests/unit/test_sdk.py holds their field names to
the gateway's OpenAPI document. Unknown fields are ignored, so a newer gateway does not break them.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    model_serializer,
)


class _Wire(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True, protected_namespaces=())


class JobStatus(StrEnum):
    """A job's state."""

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        """Whether the job has reached a final state."""
        return self in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED)


class JobError(_Wire):
    """Why a job failed."""

    type: str
    message: str


class Progress(_Wire):
    """How far a chunked (CSV) job has come."""

    rows_done: int = 0
    rows_total: int | None = None
    chunks_done: int = 0
    chunks_total: int | None = None
    percent: float | None = None
    rows_skipped: int = 0


class WebhookState(_Wire):
    """Where a job's completion webhook stands."""

    state: str
    """"pending", "retrying", "delivered" or "failed"."""
    attempts: int = 0
    last_status: int | None = None
    """The receiver's last HTTP status (0: no answer)."""


class Job(_Wire):
    """A job: status, model, timestamps, progress and error (`GET /v1/jobs/{id}`)."""

    job_id: str
    status: JobStatus
    kind: str
    model: str
    version: str | None = None
    n_rows: int | None = None
    created_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    error: JobError | None = None
    progress: Progress | None = None
    retry_of: str | None = None
    """The job this one retries (`POST /v1/jobs/{id}/retry`, on gateways that have it)."""
    priority: str = "normal"
    """"high", "normal" or "low": workers take high before normal before low."""
    webhook: WebhookState | None = None
    """The completion webhook's delivery, for a job submitted with a `callback_url`."""


class JobAccepted(_Wire):
    """The answer to a submitted job."""

    job_id: str
    status: JobStatus
    model: str
    n_rows: int | None = None
    location: str


class JobResult(_Wire):
    """The predictions of a succeeded JSON job, one per input row, in order."""

    job_id: str
    status: JobStatus
    model: str
    version: str | None = None
    data: list[float]


class ModelInfo(_Wire):
    """A model version with its features and holdout metrics."""

    name: str
    version: str
    created_at: datetime
    feature_names: list[str]
    n_features: int
    framework: str = "scikit-learn"
    framework_version: str
    estimator: str
    metrics: dict[str, float] = Field(default_factory=dict)
    sha256: str
    artifact: str = "model.joblib"


class Models(_Wire):
    """Every model version the gateway serves; `default` names what "default" means."""

    default: str
    models: list[ModelInfo]


class LineError(_Wire):
    """A bad line of a CSV file: 1-based line and column."""

    line: int
    column: int | None = None
    name: str | None = None
    msg: str


class CsvErrors(_Wire):
    """The bad lines of a CSV job (skipped, or the ones that failed it)."""

    job_id: str
    status: JobStatus
    rows_skipped: int
    errors: list[LineError]
    next_cursor: str | None = None  # pass as `cursor` for the next page


class JobPage(_Wire):
    """One page of the caller's jobs, newest first (`GET /v1/jobs`)."""

    jobs: list[Job]
    next_cursor: str | None = None


class AliasTarget(_Wire):
    """Where an alias points: one `version`, or weighted `versions` (a canary), and optionally a
    `shadow` version that scores a copy of the rows after each answer."""

    version: int | None = None
    versions: dict[str, float] | None = None
    shadow: int | None = None

    @model_serializer(mode="wrap")
    def _without_nones(self, handler: SerializerFunctionWrapHandler) -> dict[str, object]:
        # As the gateway writes it: `{"version": 3}`, not two more keys holding null.
        return {k: v for k, v in handler(self).items() if v is not None}

    def body(self) -> dict[str, object]:
        """The `PUT /v1/models/{name}/aliases/{alias}` body for this target."""
        return self.model_dump()


class Aliases(_Wire):
    """A model's aliases (`GET /v1/models/{name}/aliases`)."""

    name: str
    aliases: dict[str, AliasTarget]


class AliasChange(_Wire):
    """One change of an alias: who (a key's id), when, from, to (None: absent)."""

    model_config = ConfigDict(populate_by_name=True, serialize_by_alias=True)

    alias: str
    who: str
    at: datetime
    from_: AliasTarget | None = Field(None, alias="from")
    to: AliasTarget | None = None


class History(_Wire):
    """A model's alias changes, newest first (`GET /v1/models/{name}/history`)."""

    name: str
    changes: list[AliasChange]
