"""Wire schemas: one per direction, shared by the gateway (HTTP) and the worker (job store)."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    JsonValue,
    StrictFloat,
    StrictInt,
    WithJsonSchema,
)
from pydantic_core import PydanticCustomError

from shared.features import FLOAT32_MAX, value_problem
from shared.tasks import Priority


def _feature(value: float) -> float:
    problem = value_problem(value)
    if problem:
        raise PydanticCustomError("feature_value", problem)
    return value


# A feature value: a JSON number, finite and within float32's range (see `shared.features`).
# Strict so that `true` or `"1.5"` is refused, not coerced.
Feature = Annotated[
    StrictFloat | StrictInt,
    AfterValidator(_feature),
    WithJsonSchema({"type": "number", "minimum": -FLOAT32_MAX, "maximum": FLOAT32_MAX}),
]
Row = list[Feature]

# A model spec: "name", "name:version" or "name@alias". No leading dot: ".." must never reach a
# path (the registry refuses it as well).
MODEL_PATTERN = r"^[A-Za-z0-9_-][A-Za-z0-9_.-]*(:[A-Za-z0-9_.-]+|@[a-z0-9-]{1,63})?$"

CallbackUrl = Annotated[
    str | None,
    Field(
        max_length=2000,
        description="http(s) URL POSTed once the job has finished (signed: Mlqueue-Signature).",
    ),
]

ModelSpec = Annotated[
    str,
    Field(
        min_length=1,
        max_length=200,
        pattern=MODEL_PATTERN,
        description='A model name, "name:version", "name@alias", or "default" (the default '
        "model's `production` alias when it has one, else its newest version).",
    ),
]

EXAMPLE_ROW: list[JsonValue] = [
    0.038,
    0.051,
    0.062,
    0.022,
    -0.044,
    -0.035,
    -0.043,
    -0.003,
    0.020,
    -0.018,
]


class JobStatus(StrEnum):
    """The service's own job states (Celery's PENDING cannot tell queued from unknown)."""

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        """Whether the job has reached a final state."""
        return self in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED)


class PredictRequest(BaseModel):
    """A JSON prediction job: rows of feature values for one model."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"data": [EXAMPLE_ROW], "model": "default"}]},
    )

    data: list[Row] = Field(min_length=1, description="Rows of feature values, one per sample.")
    model: ModelSpec = "default"
    priority: Priority = Field("normal", description="Workers take high before normal before low.")
    callback_url: CallbackUrl = None


class CsvOptions(BaseModel):
    """How to read an uploaded CSV: query parameters, or form fields sent before the file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: ModelSpec = "default"
    id_column: str | None = Field(None, max_length=200, description="Passed through to the result.")
    on_error: Literal["fail", "skip"] = Field(
        "fail", description="Fail the job, or skip bad lines."
    )
    ignore_extra: bool = Field(False, description="Allow columns the model does not use.")
    priority: Priority = Field("normal", description="Workers take high before normal before low.")
    callback_url: CallbackUrl = None


class LegacyPredictRequest(BaseModel):
    """The article's `/predict` body."""

    model_config = ConfigDict(json_schema_extra={"examples": [{"data": [EXAMPLE_ROW]}]})

    data: list[Row] = Field(min_length=1)


class LegacyPredictResponse(BaseModel):
    """The article's `/predict` answer: one prediction per row."""

    data: list[float]


class JobError(BaseModel):
    """Why a job failed."""

    type: str
    message: str


class Progress(BaseModel):
    """How far a chunked job has come."""

    rows_done: int = 0
    rows_total: int | None = None
    chunks_done: int = 0
    chunks_total: int | None = None
    percent: float | None = None
    rows_skipped: int = 0


class WebhookState(BaseModel):
    """Where a job's completion webhook stands."""

    state: str = Field(description='"pending", "retrying", "delivered" or "failed".')
    attempts: int = 0
    last_status: int | None = Field(
        None, description="The receiver's last HTTP status (0: no answer)."
    )


class JobView(BaseModel):
    """A job as clients see it."""

    job_id: str
    status: JobStatus
    kind: str = Field(description='"json", "csv", or "task" (enqueued directly with Celery).')
    model: str
    version: str | None = None
    n_rows: int | None = None
    created_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    error: JobError | None = None
    progress: Progress | None = None
    retry_of: str | None = Field(None, description="The job this one retries, if any.")
    priority: Priority = "normal"
    webhook: WebhookState | None = None


class JobAccepted(BaseModel):
    """The answer to a submitted job."""

    job_id: str
    status: JobStatus
    model: str
    n_rows: int | None = None
    location: str


class JobResult(BaseModel):
    """The predictions of a succeeded JSON job, one per input row, in order."""

    job_id: str
    status: JobStatus
    model: str
    version: str | None
    data: list[float]


class ModelInfo(BaseModel):
    """A model version as read from its manifest."""

    model_config = ConfigDict(protected_namespaces=())

    name: str
    version: str
    created_at: datetime
    feature_names: list[str]
    n_features: int
    framework: str = "scikit-learn"
    framework_version: str
    estimator: str
    metrics: dict[str, float]
    sha256: str
    artifact: str = "model.joblib"


class ModelsView(BaseModel):
    """Every model version in the registry; `default` names the model that "default" means."""

    default: str
    models: list[ModelInfo]


class Problem(BaseModel):
    """An RFC 9457 problem-details body, the shape of every error answer."""

    type: str = "about:blank"
    title: str
    status: int
    detail: str
    extra: dict[str, Any] | None = None


class JobPage(BaseModel):
    """One page of the caller's jobs, newest first."""

    jobs: list[JobView]
    next_cursor: str | None = Field(
        None, description="Pass as `cursor` for the next page; null on the last one."
    )


class LineError(BaseModel):
    """A bad line of an uploaded CSV file: 1-based line and column of the file."""

    line: int
    column: int | None = None
    name: str | None = Field(None, description="The column's header name (or its number).")
    msg: str


class CsvErrors(BaseModel):
    """The lines of a CSV job that were skipped (on_error=skip) or that failed it."""

    job_id: str
    status: JobStatus
    rows_skipped: int
    errors: list[LineError] = Field(
        description="In file order: one page (at most `limit` lines and about 192 KiB)."
    )
    next_cursor: str | None = Field(
        None, description="Pass as `cursor` for the next page; null on the last page."
    )
