"""The public Celery task contract. Names here are stable: other services enqueue by them.

Priorities are queues: `mlqueue.high`, `mlqueue` (normal) and `mlqueue.low`. Workers consume all
three and always take from the first non-empty one in that order; a direct enqueuer picks the
priority by the queue it sends to (`queue_for("high")`), and a message sent without one is normal.

`mlqueue.predict` (queue `mlqueue`, or `mlqueue.high` / `mlqueue.low`; public)
    kwargs: `PredictKwargs`: `rows: list[list[float]]`, `model: str = "default"`
    returns: `{"predictions": [float, ...], "model": "<name>", "version": "<v>"}`
    fails with `InvalidInput` (bad rows), `ModelNotFound` or `ModelError`.

`mlqueue.predict_batch` (queue `mlqueue`; internal: sent by the gateway's micro-batcher)
    kwargs: `PredictBatchKwargs`: several gateway jobs in one message, `model="name:version"`;
    each job keeps its own record, result and error in the job store.

`mlqueue.shadow` (queue `mlqueue.low`; internal: sent by a worker after storing the answers of
    jobs whose alias has a shadow version) kwargs: `ShadowKwargs`; scores the rows with the shadow
    version and counts how far its predictions are from the answers (worker metrics).

`mlqueue.score_chunk` (queue `mlqueue`; internal: sent by the gateway for bulk CSV jobs)
    kwargs: `ScoreChunkKwargs` (built by `shared.csvjobs.task_kwargs`); the chunk's bytes
    travel by reference, in Redis.

`mlqueue.models.verify` (queue `mlqueue.high`; internal: sent by the gateway for a model upload)
    kwargs: `VerifyModelKwargs`; the file's bytes travel by reference, in Redis
    (`shared.model_uploads`); the worker vets, smoke-tests and installs the version, and writes
    the outcome (manifest or error) beside them.

Traces (`shared.tracing`, when on): a caller's W3C context in the message headers is continued;
the gateway's own messages also carry each job's context in their kwargs (`trace`), so that it
survives a micro-batch (many jobs, one message) and a message sent again without headers.

The `TypedDict`s below are the messages' kwargs: the gateway that builds them and the worker
that reads them share these definitions, and a service that enqueues `mlqueue.predict` directly
can import `PredictKwargs` (this module needs nothing beyond the standard library). They are
static types only: the worker still validates what it receives, since anyone may send a task.
"""

from typing import Final, Literal, NotRequired, TypedDict

QUEUE: Final = "mlqueue"  # normal priority, and every message that names no queue
QUEUE_HIGH: Final = "mlqueue.high"
QUEUE_LOW: Final = "mlqueue.low"
QUEUES: Final = (QUEUE_HIGH, QUEUE, QUEUE_LOW)  # in the order workers take from them
Priority = Literal["high", "normal", "low"]
WEBHOOK_QUEUE: Final = "mlqueue.webhooks"  # deliveries only: internal, see shared.webhooks
DELIVER_WEBHOOK: Final = "mlqueue.deliver_webhook"
WORKER_QUEUES: Final = (*QUEUES, WEBHOOK_QUEUE)  # what `celery worker -Q` consumes, in order
PRIORITIES: Final[dict[str, str]] = {"high": QUEUE_HIGH, "normal": QUEUE, "low": QUEUE_LOW}


def queue_for(priority: str) -> str:
    """The queue of a priority ("high", "normal" or "low")."""
    return PRIORITIES[priority]


PREDICT: Final = "mlqueue.predict"
PREDICT_BATCH: Final = "mlqueue.predict_batch"
SCORE_CHUNK: Final = "mlqueue.score_chunk"
SHADOW: Final = "mlqueue.shadow"
VERIFY_MODEL: Final = "mlqueue.models.verify"


class PredictKwargs(TypedDict):
    """The kwargs of `mlqueue.predict`."""

    rows: list[list[float]]
    model: NotRequired[str]  # "name", "name:version" or "name@alias"; "default" when left out


class BatchJob(TypedDict):
    """One gateway job inside a `mlqueue.predict_batch` message."""

    id: str
    rows: list[list[float]]
    trace: NotRequired[dict[str, str]]  # the job's trace context (`shared.tracing.Carrier`)
    shadow: NotRequired[str]  # "name:version" that also scores the rows, after the answer


class PredictBatchKwargs(TypedDict):
    """The kwargs of `mlqueue.predict_batch`."""

    jobs: list[BatchJob]
    model: str  # "name:version", resolved by the gateway


class LayoutDict(TypedDict):
    """`shared.csvformat.Layout` as JSON: where each feature (and the id) sits in a line."""

    feature_columns: list[int]
    id_column: int | None
    width: int
    has_header: bool
    names: list[str]


class ScoreChunkKwargs(TypedDict):
    """The kwargs of `mlqueue.score_chunk`: chunk `index` of CSV job `job_id`."""

    job_id: str
    index: int
    first_line: int  # the file's line number of the chunk's first line, for error messages
    rows: int
    model: str  # "name:version", resolved by the gateway
    layout: LayoutDict
    on_error: str  # "fail" or "skip" (`shared.csvjobs.ON_ERROR`)
    trace: NotRequired[dict[str, str]]  # the job's trace context (`shared.tracing.Carrier`)


class ShadowKwargs(TypedDict):
    """The kwargs of `mlqueue.shadow`: rows already answered by `model`, to score with `shadow`."""

    rows: list[list[float]]
    predictions: list[float]  # `model`'s answers, one per row
    model: str  # "name:version" that answered
    shadow: str  # "name:version" to compare with it


class VerifyModelKwargs(TypedDict):
    """The kwargs of `mlqueue.models.verify`: upload `upload_id` of a version of model `name`."""

    upload_id: str
    name: str
    format: str  # "skops" or "pickle" (`shared.model_uploads.FORMATS`)
