"""Live job events for `GET /v1/jobs/{id}/events`: one `status` event per change of the job view.

A stream re-reads the job's view whenever the job-finished wakeup of `gateway.events` fires, and
otherwise every `MLQUEUE_EVENTS_POLL_SECONDS`: progress of CSV chunks and the queued -> running
step are not published by the worker, and polling one hash at a bounded rate per open stream
costs less than a PUBLISH per scored chunk for every job, watched or not. An event is sent only
when the view changed; its id is a digest of the view, so `Last-Event-ID` resumes without
repeating the state the client already has. The stream ends after the final state, or after
`MLQUEUE_EVENTS_MAX_SECONDS` (the client reconnects with `Last-Event-ID`). Open streams are
bounded per API key across all gateway processes (`MLQUEUE_MAX_EVENT_STREAMS_PER_KEY`, leased
slots in Redis like long polls').
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

from gateway.events import JobEvents
from gateway.quotas import Lease, Quotas
from gateway.store import JobStore
from shared.settings import Settings


@dataclass(frozen=True)
class StatusEvent:
    """One `status` event: the job view as JSON, and its id (a digest of that JSON)."""

    id: str
    data: str


class JobStreams:
    """Opens bounded, self-ending event streams over the job store."""

    def __init__(
        self, settings: Settings, store: JobStore, events: JobEvents, quotas: Quotas
    ) -> None:
        self.settings = settings
        self.store = store
        self.events = events
        self.quotas = quotas

    async def acquire(self, owner: str) -> Lease:
        """A place for one more stream of `owner`, across every gateway process; `RateLimited`
        (429) at the bound."""
        return await self.quotas.event_stream(owner)

    async def stream(
        self, job_id: str, owner: str, last_event_id: str | None, slot: Lease
    ) -> AsyncIterator[StatusEvent]:
        """The job's changes from now on (the current state first, unless it is the one
        `last_event_id` names), until its final state; releases `slot` at the end."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.settings.events_max_seconds
        last = last_event_id
        try:
            with self.events.subscription(job_id) as changed:
                while True:
                    view = await self.store.get(job_id, owner)
                    data = view.model_dump_json()
                    event_id = hashlib.sha256(data.encode()).hexdigest()[:16]
                    if event_id != last:
                        last = event_id
                        yield StatusEvent(event_id, data)
                    remaining = deadline - loop.time()
                    if view.status.finished or remaining <= 0:
                        return
                    wait = min(remaining, self.settings.events_poll_seconds)
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(changed.wait(), wait)
                    changed.clear()
        finally:
            await slot.release()
