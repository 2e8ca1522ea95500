"""The job queue as the gateway sees it: validate, record, publish by task name, read back."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from dataclasses import dataclass, field

from celery import Celery
from kombu.exceptions import OperationalError
from starlette.concurrency import run_in_threadpool

from gateway import metrics
from gateway.batcher import Batcher
from gateway.events import JobEvents
from gateway.store import JobStore
from gateway.validation import check_rows
from shared import jobstore
from shared.errors import QueueUnavailable
from shared.registry import Registry
from shared.schemas import JobAccepted, JobStatus, JobView
from shared.settings import Settings
from shared.tasks import PREDICT_BATCH, QUEUE, PredictBatchKwargs

log = logging.getLogger(__name__)
# Fail fast when the broker is away: the client gets a 503 and retries, the gateway never hangs.
PUBLISH_RETRY = {"max_retries": 2, "interval_start": 0.1, "interval_step": 0.2, "interval_max": 0.5}


@dataclass
class JobQueue:
    """Submits JSON jobs and reads, waits for and cancels any job."""

    settings: Settings
    registry: Registry
    store: JobStore
    events: JobEvents
    celery: Celery
    batcher: Batcher = field(init=False)

    def __post_init__(self) -> None:
        self.batcher = Batcher(
            self.store,
            self.publish,
            max_rows=self.settings.batch_max_rows,
            max_wait=self.settings.batch_max_wait_ms / 1000,
        )

    async def submit(self, rows: list[list[float]], model: str, owner: str) -> JobAccepted:
        """Validate `rows` for `model`, record the job, enqueue it; returns the accepted job."""
        info = self.registry.resolve(model)
        check_rows(rows, info.n_features, self.settings.max_rows_per_job)
        job_id = str(uuid.uuid4())
        record = jobstore.new_record(
            job_id, kind="json", model=info.name, n_rows=len(rows), owner=owner
        )
        # The version is pinned at submit: a model trained meanwhile does not change this job.
        record["version"] = info.version
        await self.batcher.add(record, rows, f"{info.name}:{info.version}")
        metrics.job_submitted(info.name, "json", len(rows))
        log.info(
            "job submitted",
            extra={
                "job_id": job_id,
                "kind": "json",
                "model": info.name,
                "version": info.version,
                "rows": len(rows),
            },
        )
        return JobAccepted(
            job_id=job_id,
            status=JobStatus.QUEUED,
            model=info.name,
            n_rows=len(rows),
            location=f"/v1/jobs/{job_id}",
        )

    async def wait(
        self, job_id: str, owner: str, timeout: float
    ) -> tuple[JobView, list[float] | None]:
        """The job's view (and predictions) once it has finished, or after `timeout` seconds."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        with self.events.subscription(job_id) as finished:
            while True:
                view, predictions = await self.store.result(job_id, owner)
                remaining = deadline - loop.time()
                if view.status.finished or remaining <= 0:
                    return view, predictions
                # Re-read at least every second, in case an event was missed while reconnecting.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(finished.wait(), min(remaining, 1.0))
                finished.clear()

    async def publish(self, message_id: str, kwargs: PredictBatchKwargs) -> None:
        """Send one batch message (kombu publishes synchronously: off the event loop)."""
        try:
            await run_in_threadpool(
                self.celery.send_task,
                PREDICT_BATCH,
                kwargs=kwargs,
                task_id=message_id,
                queue=QUEUE,
                # Celery would otherwise build a repr of every row for its message headers: CPU
                # spent for nothing, and row data shown in monitoring tools.
                argsrepr="()",
                kwargsrepr=f"<{len(kwargs['jobs'])} jobs>",
                retry=True,
                retry_policy=PUBLISH_RETRY,
            )
        except (OperationalError, OSError) as exc:
            raise QueueUnavailable("the job queue is unavailable; retry shortly") from exc
