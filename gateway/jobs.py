"""The gateway's service layer for jobs: what the routes (thin views) ask for, in one place.

`Jobs` owns submit, read, wait, result, cancel and errors for both kinds of job (JSON rows and
CSV uploads) and dispatches on the kind itself, so no route names a Redis key or branches on it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass

import orjson
from redis.asyncio import Redis
from redis.exceptions import RedisError

from gateway import keys, metrics, traces
from gateway.aliases import Aliases
from gateway.autopipe import AutoPipeline
from gateway.batcher import Batcher
from gateway.callbacks import webhook_fields
from gateway.csv_store import MAX_ERRORS_LISTED, CsvStore, ErrorCursor
from gateway.csv_upload import CsvUpload, fingerprint_upload, idle_bounded
from gateway.events import JobEnded, JobEvents
from gateway.idempotency import Idempotency, fingerprint
from gateway.job_stream import JobStreams, StatusEvent
from gateway.listing import JobListing
from gateway.publisher import Publisher
from gateway.quotas import Lease, Quotas, forgo
from gateway.ratelimit import RateLimiter
from gateway.store import JobStore
from gateway.validation import check_rows
from shared import jobstore, tracing
from shared.csvformat import parse_small
from shared.errors import InvalidInput, JobConflict, QueueUnavailable
from shared.registry import Registry
from shared.replication import ReplicaWait
from shared.schemas import (
    CsvErrors,
    JobAccepted,
    JobPage,
    JobStatus,
    JobView,
    LineError,
)
from shared.settings import Settings
from shared.tasks import PREDICT_BATCH, PredictBatchKwargs, queue_for

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Submitted:
    """A submit's answer; `replayed` when an Idempotency-Key named a job created before."""

    accepted: JobAccepted
    replayed: bool = False


@dataclass(frozen=True)
class Predictions:
    """A succeeded JSON job's predictions as the worker stored them (a JSON array of numbers),
    passed through to the answer unparsed: decoding them into floats and encoding them again
    was the result route's largest cost for big jobs, and pure overhead for small ones."""

    job_id: str
    model: str
    version: str | None
    data: bytes

    def body(self) -> bytes:
        """The `JobResult` JSON: the job's fields, then `data` spliced in as stored."""
        head = orjson.dumps(
            {"job_id": self.job_id, "status": "succeeded", "model": self.model,
             "version": self.version}
        )  # fmt: skip
        return head[:-1] + b',"data":' + self.data + b"}"


Ended = tuple[JobView, bytes | None] | Predictions
"""What a wait ends with: the job's view and its stored predictions, or an announced success."""


@dataclass(frozen=True)
class CsvResult:
    """A CSV job's predictions, as a `text/csv` byte stream."""

    job_id: str
    body: AsyncIterator[bytes]


class Jobs:
    """Every operation on jobs, on behalf of their owner (`owner` is an API key's id)."""

    def __init__(
        self,
        settings: Settings,
        registry: Registry,
        redis: Redis,
        events: JobEvents,
        publisher: Publisher,
        commands: AutoPipeline | None = None,
    ) -> None:
        self.settings = settings
        self.registry = registry
        self.aliases = Aliases(redis, registry)
        self.events = events
        self.publisher = publisher
        wait = ReplicaWait.of(settings)
        commands = commands or AutoPipeline(redis)
        owners = keys.admin_owners(settings)
        self.store = JobStore(redis, settings.result_ttl, owners, wait, commands)
        self.chunks = CsvStore(redis, settings.result_ttl, wait)
        self.quotas = Quotas(redis, settings, commands)
        self.listing = JobListing(redis, settings.result_ttl)
        self.idempotency = Idempotency(redis, settings.idempotency_ttl, commands)
        self.limits = RateLimiter(redis, settings)
        self.streams = JobStreams(settings, self.store, events, self.quotas)
        self.batcher = Batcher(
            self.store,
            self._publish_batch,
            max_rows=settings.batch_max_rows,
            max_wait=settings.batch_max_wait_ms / 1000,
            charge=self.quotas.results,  # checked in the batch's own round trip
            # The message goes with the records in one round trip, unless a replica must have
            # the records first (WAIT after the script, then the message: as before).
            encode=self._encode_batch if wait is None else None,
        )

    async def submit(
        self,
        rows: list[list[float]],
        model: str,
        owner: str,
        extra: Mapping[str, str] | None = None,
        priority: str = "normal",
        job_id: str | None = None,
    ) -> JobAccepted:
        """Validate `rows` for `model`, record the job (with `extra` fields), enqueue it;
        returns the accepted job (`job_id`: its id, made here if not given)."""
        job_id = job_id or str(uuid.uuid4())
        await self.aliases.ensure()
        # An alias that splits traffic picks the version from the job id.
        pinned = self.registry.pin(model, job_id)
        info = pinned.info
        check_rows(rows, info.n_features, self.settings.max_rows_per_job)
        record = jobstore.new_record(
            job_id, kind="json", model=info.name, n_rows=len(rows), owner=owner
        )
        record.update(extra or {})
        if priority != "normal":  # the view reads a missing field as normal
            record["priority"] = priority
        # The version is pinned at submit: a model trained meanwhile does not change this job.
        record["version"] = info.version
        with tracing.span("mlqueue.submit", traces.job_attributes(job_id, "json", info, len(rows))):
            shadow = f"{pinned.shadow.name}:{pinned.shadow.version}" if pinned.shadow else ""
            await self.batcher.add(record, rows, pinned.spec, queue_for(priority), shadow)
            metrics.job_submitted(info.name, "json", len(rows))
            extra = {"job_id": job_id, "kind": "json", "model": info.name, "version": info.version}
            log.info("job submitted", extra={**extra, "rows": len(rows)})
        return JobAccepted(
            job_id=job_id,
            status=JobStatus.QUEUED,
            model=info.name,
            n_rows=len(rows),
            location=f"/v1/jobs/{job_id}",
        )

    async def submit_once(
        self,
        rows: list[list[float]],
        model: str,
        owner: str,
        key: str | None,
        priority: str = "normal",
        callback_url: str | None = None,
    ) -> Submitted:
        """`submit`, at most once per `Idempotency-Key` (`key`) of this owner."""
        extra = await webhook_fields(self.settings, callback_url)
        if key is None:  # the hot path: no Redis round trip beyond the submit's own
            await self.limits.take(owner, jobs=1, rows=len(rows))  # nothing when limits are off
            return Submitted(await self.submit(rows, model, owner, extra, priority))
        fp = fingerprint(
            orjson.dumps(rows), model.encode(), priority.encode(), (callback_url or "").encode()
        )
        found = await self.idempotency.claim(owner, key, fp)
        if found is not None:  # a replay costs no tokens: it creates nothing
            return Submitted(self.idempotency.replay(found, fp), replayed=True)
        try:
            await self.limits.take(owner, jobs=1, rows=len(rows))
            accepted = await self.submit(rows, model, owner, extra, priority)
        except BaseException:
            await asyncio.shield(self.idempotency.release(owner, key))
            raise
        await asyncio.shield(self.idempotency.bind(owner, key, fp, accepted))
        return Submitted(accepted)

    async def submit_csv(
        self,
        content_type: str,
        body: AsyncIterator[bytes],
        owner: str,
        query: Mapping[str, str],
        key: str | None = None,
    ) -> Submitted:
        """Stream a multipart CSV upload into chunks; `query` holds the options given as query
        parameters (form fields sent before the file override them). With an Idempotency-Key
        (`key`), at most once: see `gateway.idempotency` for a duplicate of an upload."""
        await self.aliases.ensure()
        async with self.quotas.upload(owner):
            if key is None:
                await self.limits.take(owner, jobs=1)
                return Submitted(await self._run(self._upload(owner, query), content_type, body))
            found = await self.idempotency.claim(owner, key)
            if found is not None:  # read the duplicate through to compare it, creating nothing
                idle = self.settings.upload_idle_timeout
                fp = await fingerprint_upload(content_type, idle_bounded(body, idle), query)
                return Submitted(self.idempotency.replay(found, fp), replayed=True)
            upload = self._upload(owner, query, key)
            try:
                await self.limits.take(owner, jobs=1)
                accepted = await self._run(upload, content_type, body)
            except BaseException:
                await asyncio.shield(self.idempotency.release(owner, key))
                raise
            await asyncio.shield(self.idempotency.bind(owner, key, upload.fingerprint(), accepted))
            return Submitted(accepted)

    @staticmethod
    async def _run(upload: CsvUpload, content_type: str, body: AsyncIterator[bytes]) -> JobAccepted:
        with tracing.span("mlqueue.submit", {tracing.JOB_KIND: "csv"}):  # job id: once known
            return await upload.run(content_type, body)

    def _upload(self, owner: str, query: Mapping[str, str], key: str | None = None) -> CsvUpload:
        async def before_chunk(rows: int) -> None:
            # The key's rows/s paces the upload; a long upload keeps its idempotency claim.
            await self.limits.pace(owner, rows)
            if key is not None:
                await self.idempotency.refresh(owner, key)

        hook = before_chunk if key is not None or self.limits.enabled else None
        return CsvUpload(
            self.settings,
            self.registry,
            self.store,
            self.chunks,
            self.publisher,
            self.quotas,
            owner,
            query,
            before_chunk=hook,
            fingerprinted=key is not None,
        )

    async def get(self, job_id: str, owner: str) -> JobView:
        """The job's status, timestamps, model, row count, progress and error."""
        return await self.store.get(job_id, owner)

    async def list_jobs(
        self,
        owner: str,
        limit: int,
        cursor: str | None = None,
        status: JobStatus | None = None,
        kind: str | None = None,
    ) -> JobPage:
        """The owner's jobs, newest first, one page after `cursor` (from the previous page)."""
        return await self.listing.page(owner, limit, cursor, status, kind)

    async def wait(
        self,
        job_id: str,
        owner: str,
        timeout: float,
    ) -> Ended:
        """The job's view (and predictions) once it has finished, or after `timeout` seconds;
        a success announced with its answer as `Predictions`, without reading the job back.
        A wait holds one of the owner's long-poll slots (`RateLimited` when none is free)."""
        loop = asyncio.get_running_loop()
        seconds = max(0.0, min(timeout, self.settings.max_wait_seconds))
        deadline = loop.time() + seconds
        # Subscribed before the read: an end announced in between is not missed.
        with self.events.subscription(job_id) as finished:
            view, predictions = await self._read(job_id, owner, deadline)
            if view.status.finished or seconds <= 0:
                return view, predictions
            slot = await self.quotas.long_poll_slot(owner, seconds)  # 429 when none is free
            try:
                return await self._wait(job_id, owner, deadline, finished)
            finally:
                await slot.release()

    async def _read(self, job_id: str, owner: str, deadline: float) -> tuple[JobView, bytes | None]:
        """The job's view and predictions. A Redis error (a restart or failover under a long
        poll) is ridden out until `deadline`, since the job's state survives it; past the
        deadline the 503 stands."""
        loop = asyncio.get_running_loop()
        while True:
            try:
                return await self.store.result(job_id, owner)
            except RedisError:
                if loop.time() >= deadline:
                    raise
                await asyncio.sleep(min(0.5, max(0.0, deadline - loop.time())))

    async def _wait(self, job_id: str, owner: str, deadline: float, finished: JobEnded) -> Ended:
        """Wait for `finished` (subscribed before the job was last read, or submitted), then
        answer from its announcement or read the job; re-read at least every second, in case
        an announcement was missed while the subscription reconnected."""
        loop = asyncio.get_running_loop()
        timeout = round(deadline - loop.time(), 3)
        attributes: tracing.Attributes = {tracing.JOB_ID: job_id, "mlqueue.wait.timeout_s": timeout}
        with tracing.span("mlqueue.wait", attributes):
            while True:
                remaining = deadline - loop.time()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(max(0.0, min(remaining, 1.0))):
                        await finished.wait()
                known = finished.announced
                if known is not None and self.store.may_see(known.owner, owner):
                    return Predictions(job_id, known.model, known.version, known.predictions)
                finished.clear()
                view, predictions = await self._read(job_id, owner, deadline)
                if view.status.finished or deadline - loop.time() <= 0:
                    return view, predictions

    async def open_events(
        self, job_id: str, owner: str, last_event_id: str | None
    ) -> tuple[AsyncIterator[StatusEvent], Lease]:
        """The job's `status` events until it ends, and the stream's place among the owner's
        (released when the stream ends; release it too if it is never iterated). 404 for an
        unknown job and 429 at the bound, before anything is streamed."""
        await self.store.get(job_id, owner)
        slot = await self.streams.acquire(owner)
        return self.streams.stream(job_id, owner, last_event_id, slot), slot

    async def result(
        self, job_id: str, owner: str, wait: float = 0
    ) -> Predictions | CsvResult | JobView:
        """The predictions of a succeeded job (a `CsvResult` for a CSV job); the job's view while
        it is not finished; `JobConflict` carrying its error once it failed or was cancelled."""
        ended = await self.wait(job_id, owner, wait)
        if isinstance(ended, Predictions):
            return ended
        view, predictions = ended
        if view.status is JobStatus.SUCCEEDED and view.kind == "csv":
            chunks, id_column = await self.chunks.result_info(job_id)
            return CsvResult(job_id, self.chunks.result_csv(job_id, chunks, id_column))
        if view.status is JobStatus.SUCCEEDED and predictions is not None:
            return Predictions(job_id, view.model, view.version, predictions)
        if view.status.finished:
            reason = f": {view.error.message}" if view.error else ""
            raise JobConflict(
                f"job {job_id} {view.status.value}{reason}", job=view.model_dump(mode="json")
            )
        return view

    async def cancel(self, job_id: str, owner: str) -> JobView:
        """Cancel a queued or running job: it will not produce a result."""
        previous = await self.store.cancel(job_id, owner)
        if previous not in (JobStatus.QUEUED, JobStatus.RUNNING):
            raise JobConflict(
                f"job {job_id} has already {previous}; nothing to cancel", job_status=previous
            )
        view = await self.store.get(job_id, owner)
        if view.kind == "csv":  # its chunks will not be scored: free their data now
            await self.chunks.purge(job_id)
        return view

    async def retry(self, job_id: str, owner: str) -> JobAccepted:
        """A new job with the rows and pinned model version of a failed or cancelled JSON job;
        `JobConflict` for any other job (a CSV file is not kept: it must be uploaded again)."""
        view, rows, callback_url = await self.store.retry_input(job_id, owner)
        if view.status not in (JobStatus.FAILED, JobStatus.CANCELLED):
            raise JobConflict(
                f"job {job_id} is {view.status.value}: only failed or cancelled jobs can be "
                "retried",
                job_status=view.status.value,
            )
        if view.kind == "csv":
            raise JobConflict(
                f"job {job_id} is a CSV job: its file is not kept, upload it again "
                "(POST /v1/jobs/csv)",
                job_status=view.status.value,
            )
        if rows is None:
            raise JobConflict(
                f"job {job_id} has no rows kept to retry (it was enqueued directly with Celery)",
                job_status=view.status.value,
            )
        spec = f"{view.model}:{view.version}" if view.version else view.model
        # The retry reports to the original's receiver too (checked again: the allowance may
        # have changed since).
        extra = {**await webhook_fields(self.settings, callback_url), "retry_of": job_id}
        await self.limits.take(owner, jobs=1, rows=len(rows))
        accepted = await self.submit(rows, spec, owner, extra, priority=view.priority)
        log.info("job retried", extra={"job_id": accepted.job_id, "retry_of": job_id})
        return accepted

    async def errors(
        self, job_id: str, owner: str, cursor: str | None = None, limit: int = MAX_ERRORS_LISTED
    ) -> CsvErrors:
        """One page of the bad lines of a CSV job: those skipped (on_error=skip), or those that
        failed it; `next_cursor` asks for the next page."""
        start = ErrorCursor.parse(cursor)
        view = await self.store.get(job_id, owner)
        listed, after = await self.chunks.errors(job_id, start, min(limit, MAX_ERRORS_LISTED))
        return CsvErrors(
            job_id=job_id,
            status=view.status,
            rows_skipped=view.progress.rows_skipped if view.progress else 0,
            errors=[LineError.model_validate(e) for e in listed],
            next_cursor=None if after is None else str(after),
        )

    async def predict_now_json(
        self, rows: list[list[float]], owner: str, model: str = "default"
    ) -> bytes:
        """The article's synchronous façade (and V2 `infer`'s): submit rows to `model` and wait
        (bounded); the predictions as the JSON array the worker stored."""
        timeout = self.settings.sync_timeout
        deadline = asyncio.get_running_loop().time() + timeout
        job_id = str(uuid.uuid4())
        with self.events.subscription(job_id) as finished:  # before the job can end
            # The wait's long-poll slot is taken while the job is sent: one round trip less.
            taking = self.quotas.take_long_poll(owner, timeout)
            try:
                await self.submit(rows, model, owner, job_id=job_id)
            except BaseException:
                await asyncio.shield(forgo(taking))
                raise
            slot = await taking  # RateLimited (429) when the key has all its long polls open
            try:
                ended = await self._wait(job_id, owner, deadline, finished)
            finally:
                await slot.release()
        if isinstance(ended, Predictions):
            return ended.data
        view, predictions = ended
        if view.status is JobStatus.SUCCEEDED:
            return predictions or b"[]"
        if view.status is JobStatus.FAILED and view.error and view.error.type == "InvalidInput":
            raise InvalidInput(view.error.message, job_id=job_id)
        if view.status.finished:
            raise JobConflict(f"job {job_id} {view.status.value}", job_id=job_id)
        raise QueueUnavailable(
            f"no result within {timeout:g} s; poll /v1/jobs/{job_id}/result", job_id=job_id
        )

    async def predict_csv_now(self, data: bytes, owner: str) -> bytes:
        """`predict_now_json` for a small CSV file held whole (header optional)."""
        await self.aliases.ensure()
        info = self.registry.resolve("default")
        rows, _ = parse_small(data, info.feature_names, self.settings.max_rows_per_job)
        return await self.predict_now_json(rows, owner)

    async def close(self) -> None:
        """Send what the batcher holds and wait for every send in flight."""
        await self.batcher.close()

    async def _publish_batch(
        self, message_id: str, message: PredictBatchKwargs, queue: str
    ) -> None:
        await self.publisher.send(PREDICT_BATCH, message_id, message, _summary(message), queue)

    def _encode_batch(
        self, message_id: str, message: PredictBatchKwargs, queue: str
    ) -> bytes | None:
        return self.publisher.encoded(PREDICT_BATCH, message_id, message, _summary(message), queue)


def _summary(message: PredictBatchKwargs) -> str:
    # What Celery shows in place of a batch's arguments.
    return f"<{len(message['jobs'])} jobs>"
