"""Micro-batching in the gateway: concurrent small jobs for one model share one broker message.

A job joins the open batch of its model. An idle gateway sends a batch on the next turn of the
event loop (no added latency); while another batch is being sent, a new batch waits up to
`max_wait` seconds for company, or until it holds `max_rows` rows. Each job keeps its own record,
result and error: the message only carries them together. A submit returns once its job's record
is written and its message is in the broker, so a 202 means the job is durably queued.

A job's rows are serialized when it joins a batch, not when the batch is sent: whatever one job
carries can only fail that job, never its neighbours in the same message.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import orjson

from gateway import traces
from gateway.quotas import ResultBytes
from gateway.store import JobStore
from shared import tracing
from shared.errors import InvalidInput
from shared.tasks import QUEUE, BatchJob, PredictBatchKwargs

log = logging.getLogger(__name__)
Publish = Callable[[str, PredictBatchKwargs, str], Awaitable[None]]  # id, message, queue
# The message `Publish` would send (id, message, queue), for the job store to push with the
# records; None: send it with `Publish`.
Encode = Callable[[str, PredictBatchKwargs, str], bytes | None]


@dataclass
class _Batch:
    model: str
    queue: str
    records: list[dict[str, str]] = field(default_factory=list)
    jobs: list[BatchJob] = field(default_factory=list)
    payloads: dict[str, tuple[str, bytes]] = field(default_factory=dict)
    rows: int = 0
    refused: dict[str, Exception] = field(default_factory=dict)  # job id -> why, set once sent
    sent: asyncio.Future[None] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )
    timer: asyncio.TimerHandle | None = None


class Batcher:
    """Coalesces jobs per model into messages of at most `max_rows` rows."""

    def __init__(
        self,
        store: JobStore,
        publish: Publish,
        max_rows: int,
        max_wait: float,
        charge: ResultBytes | None = None,
        encode: Encode | None = None,
    ) -> None:
        self.store = store
        self.charge = charge  # each job's result bytes count against its owner's limit
        self.publish = publish
        self.encode = encode
        self.max_rows = max_rows
        self.max_wait = max_wait
        self._open: dict[tuple[str, str], _Batch] = {}  # by (model, queue): one priority each
        self._sending: set[asyncio.Task[None]] = set()

    async def add(
        self,
        record: dict[str, str],
        rows: list[list[float]],
        model: str,
        queue: str = QUEUE,
        shadow: str = "",
    ) -> None:
        """Queue one job on `queue` (its priority); returns when its message is in the broker
        (or raises why not: a 429 when its results would pass its owner's stored bytes).
        `shadow` ("name:version") also scores the rows, after the answer."""
        rows, payload = serialize(rows)  # before joining: a bad job fails alone
        key = (model, queue)
        batch = self._open.get(key)
        if batch is not None and batch.rows + len(rows) > self.max_rows:
            self._send(key)
            batch = None
        if batch is None:
            batch = self._open[key] = _Batch(model, queue)
            delay = self.max_wait if self._sending else 0.0
            batch.timer = asyncio.get_running_loop().call_later(delay, self._send, key)
        batch.records.append(record)
        job: BatchJob = {"id": record["id"], "rows": rows}
        if shadow:
            job["shadow"] = shadow
        if tracing.ON:  # the job's submit span, for the batch span to link and the worker to join
            job["trace"] = tracing.carrier()
        batch.jobs.append(job)
        batch.payloads[record["id"]] = (model, payload)
        batch.rows += len(rows)
        if batch.rows >= self.max_rows:
            self._send(key)
        # Shielded: a client that disconnects must not cancel the send of its neighbours' jobs.
        await asyncio.shield(batch.sent)
        if record["id"] in batch.refused:
            raise batch.refused[record["id"]]

    async def close(self) -> None:
        """Send what is open and wait for every send in flight."""
        for key in list(self._open):
            self._send(key)
        if self._sending:
            await asyncio.wait(self._sending)

    def _send(self, key: tuple[str, str]) -> None:
        batch = self._open.pop(key, None)
        if batch is None:
            return
        if batch.timer is not None:
            batch.timer.cancel()
        task = asyncio.create_task(self._deliver(batch))
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)

    async def _deliver(self, batch: _Batch) -> None:
        try:
            with traces.batch_span(batch.jobs, batch.model, batch.rows):
                # The message goes with the records, in the same script, unless a job is
                # refused there: then the others go in a message of their own.
                message_id = _message_id(batch.jobs)
                push = self._encoded(message_id, batch)
                batch.refused.update(
                    await self.store.create_many(batch.records, batch.payloads, self.charge, push)
                )
                jobs = [job for job in batch.jobs if job["id"] not in batch.refused]
                if jobs and batch.refused:  # the script pushed nothing
                    message_id, push = _message_id(jobs), None
                if jobs and push is None:
                    await self.publish(
                        message_id, {"jobs": jobs, "model": batch.model}, batch.queue
                    )
                if jobs:
                    # Links the message id (the worker's Celery task id) to its job ids.
                    extra = {"message_id": message_id, "model": batch.model, "rows": batch.rows}
                    log.info("batch sent", extra={**extra, "job_ids": [j["id"] for j in jobs]})
        except BaseException as exc:
            batch.sent.set_exception(exc)
            # Read the exception even if every waiter went away, so asyncio does not warn.
            batch.sent.add_done_callback(lambda f: f.exception())
            # The jobs were not queued: forget their records (best effort, Redis may be down).
            with contextlib.suppress(Exception):
                await self.store.delete_many([r["id"] for r in batch.records])
            if not isinstance(exc, Exception):
                raise
        else:
            batch.sent.set_result(None)

    def _encoded(self, message_id: str, batch: _Batch) -> tuple[str, bytes] | None:
        if self.encode is None:
            return None
        message = self.encode(message_id, {"jobs": batch.jobs, "model": batch.model}, batch.queue)
        return None if message is None else (batch.queue, message)


def _message_id(jobs: list[BatchJob]) -> str:
    # One job alone keeps its own id as the message id, which eases tracing.
    return jobs[0]["id"] if len(jobs) == 1 else str(uuid.uuid4())


def serialize(rows: list[list[float]]) -> tuple[list[list[float]], bytes]:
    """The rows as they will travel (ints past 64 bits as floats) and their JSON; `InvalidInput`
    when they cannot be sent at all."""
    try:
        return rows, orjson.dumps(rows)
    except orjson.JSONEncodeError:
        pass
    try:  # orjson refuses ints past 64 bits; the model reads float32 anyway
        floats = [[float(v) for v in row] for row in rows]
        return floats, orjson.dumps(floats)
    except (TypeError, ValueError, OverflowError, orjson.JSONEncodeError) as exc:
        raise InvalidInput(f"the rows cannot be serialized: {type(exc).__name__}") from exc
