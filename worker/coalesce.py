"""Messages coalesced in the worker's consumer and run in a pool process as one job.

Celery hands each message it receives to its task's `Strategy`; the default one sends each task
to the pool on its own. A coalescing strategy (`handler`) keeps the messages it is given in a
buffer in the consumer (the worker's main process) and sends them to a pool process together
(`Batcher`), as celery-batches does. Two kinds use it: direct `mlqueue.predict` tasks
(`worker.direct_strategy`) and the gateway's `mlqueue.predict_batch` micro-batches
(`worker.batch_strategy`).

What stays as it was for each message: it is acknowledged only once its outcome is stored (or
handed back when Redis is away), and on the pool's errors Celery's own per-request handling runs
for each one: a pool process killed or lost hands every message of its batch back
(`task_reject_on_worker_lost`), a hard time limit fails each task (`worker.celery_app`'s
handler of `task_failure`). The batch runs under the app's time limits. Only Celery's public
strategy and request classes are used; a message the kind cannot batch takes Celery's default
path unchanged.

Failover (`worker.failover`): the node records the messages of a batch as held when the batch
goes to the pool, in one round trip, rather than each on receipt (each write would block the
consumer); a message still buffered when its node dies comes back after the visibility timeout.

Prefetch: a buffered or running batched message is unacknowledged, and would hold one of the
consumer's few prefetch slots (`worker_prefetch_multiplier` 1): the buffer could never fill.
Each batched message therefore raises the consumer's prefetch by one until it is acknowledged,
up to `max_size` (or `max_messages`) x (pool processes + 1) messages (a batch per process and
one filling), the way Celery does for tasks that wait for their ETA.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

from celery import Celery, Task, signals
from celery.utils.imports import symbol_by_name
from celery.worker.request import Request, create_request_cls
from celery.worker.state import task_ready, task_reserved
from celery.worker.strategy import default
from kombu.asynchronous.timer import Entry

from worker import failover

log = logging.getLogger(__name__)
Handler = Callable[..., Any]

# Options a message embeds that only Celery's own handling honours.
EMBEDDED = ("callbacks", "errbacks", "chain", "chord")


def plain(payload: Any, headers: dict[str, Any]) -> dict[str, Any] | None:
    """A protocol-2 message's kwargs when nothing but kwargs asks for Celery's own handling:
    no positional args, callbacks, chain or chord, ETA, own time limits, group, shadow name
    or trace context; else None."""
    try:
        args, kwargs, embed = payload
    except (TypeError, ValueError):
        return None
    if (
        args
        or not isinstance(kwargs, dict)
        or any((embed or {}).get(key) for key in EMBEDDED)
        or headers.get("eta")
        or any(headers.get("timelimit") or ())
        or headers.get("group")
        or headers.get("shadow")
        or "traceparent" in headers
    ):
        return None
    return kwargs


class Buffered(NamedTuple):
    """A message in a `Batcher`'s buffer."""

    req: Request
    raised: bool  # it raised the consumer's prefetch by one
    size: int  # its `Kind.size`


@dataclass(frozen=True)
class Kind:
    """What one kind of batched message brings to the shared machinery."""

    name: str  # for logs: "direct", "gateway"
    batchable: Callable[[Any, dict[str, Any]], bool]  # (payload, headers): may it be batched?
    pack: Callable[[Request], Any]  # what the pool process gets of one message (picklable)
    execute: Callable[[list[Any]], bool]  # the pool's entry point; True: hand every message back
    size: Callable[[Request], int] = lambda _: 1  # its share of a batch's `max_size`
    # Send to any free process at once, never wait for a fuller batch (see `Batcher._send_due`).
    eager: bool = False


def handler(
    task: Task, app: Celery, consumer: Any, kind: Kind, batcher: Batcher, **options: Any
) -> Handler:
    """The task's message handler in the consumer (what a `Strategy` returns)."""
    fallback = default(task, app, consumer, **options)
    Req = create_request_cls(
        symbol_by_name(task.Request),
        task,
        consumer.pool,
        consumer.hostname,
        consumer.event_dispatcher,
        app=app,
    )
    revoked = consumer.controller.state.revoked
    utc = app.uses_utc_timezone()

    def handle(message: Any, body: Any, ack: Any, reject: Any, callbacks: Any, **kw: Any) -> Any:
        # Protocol 2 messages only (`body` is None for them); Celery converts older ones.
        if body is not None or "args" in message.payload:
            return fallback(message, body, ack, reject, callbacks, **kw)
        headers = message.headers
        if not kind.batchable(message.payload, headers):
            return fallback(message, body, ack, reject, callbacks, **kw)
        req = Req(
            message,
            on_ack=ack,
            on_reject=reject,
            app=app,
            hostname=consumer.hostname,
            eventer=consumer.event_dispatcher,
            task=task,
            connection_errors=consumer.connection_errors,
            body=message.body,
            headers=headers,
            decoded=False,
            utc=utc,
        )
        if (req.expires or req.id in revoked) and req.revoked():
            return None
        setattr(req, failover.RECORDED_LATER, True)  # with its batch, see `Batcher._send`
        signals.task_received.send(sender=consumer, request=req)
        task_reserved(req)
        if callbacks:
            for callback in callbacks:
                callback(req)
        batcher.add(req)
        return None

    return handle


class Batcher:
    """The consumer's buffer of one kind of message and the batches it has sent to the pool."""

    def __init__(
        self,
        consumer: Any,
        max_size: int,
        wait: float,
        time_limits: tuple[float | None, float | None],
        kind: Kind,
        max_messages: int | None = None,
    ) -> None:
        self.consumer = consumer  # its `qos` is made after the strategies: read it when used
        self.pool = consumer.pool
        self.timer = consumer.timer
        self.kind = kind
        self.max_size = max_size
        self.wait = wait
        self.soft_limit, self.hard_limit = time_limits
        self.processes = max(1, int(getattr(self.pool, "num_processes", None) or 1))
        # Messages held beyond the usual prefetch: a node must not hoard what other nodes could
        # run, so a kind whose size counts rows bounds it in messages.
        self.max_raised = (max_messages or max_size) * (self.processes + 1)
        self.buffer: list[Buffered] = []
        self.buffered = 0  # the buffer's total `Kind.size`
        self.first_at = 0.0
        self.running = 0  # batches sent to the pool and not yet ended
        self.raised = 0  # prefetch slots added for batched messages not yet acknowledged
        self._timer: Entry | None = None

    def add(self, req: Request) -> None:
        """Buffer one message; send a batch if one is due."""
        raise_prefetch = self.raised < self.max_raised
        if raise_prefetch:
            self.raised += 1
            self.consumer.qos.increment_eventually()
        if not self.buffer:
            self.first_at = time.monotonic()
        size = self.kind.size(req)
        self.buffer.append(Buffered(req, raise_prefetch, size))
        self.buffered += size
        self._send_due()

    def _send_due(self) -> None:
        # A full batch goes to any free process. One not full goes, for a lazy kind (direct
        # tasks), only when no batch is running (else the running batch's end sends it, grown
        # meanwhile): there the consumer, not the pool, is the bottleneck, and half-empty
        # batches on every free process would spend the cores it needs on per-batch costs. An
        # eager kind (gateway micro-batches, already batched once) goes to any free process.
        while self.buffer and self.running < self.processes:
            full = self.buffered >= self.max_size
            idle = self.running == 0 or self.kind.eager
            due = idle and time.monotonic() - self.first_at >= self.wait
            if not (full or due):
                break
            self._send(self._take())
        if self.buffer and self._timer is None and self.running == 0:
            delay = max(0.0, self.first_at + self.wait - time.monotonic())
            self._timer = self.timer.call_after(delay, self._on_timer)

    def _take(self) -> list[Buffered]:
        """The oldest messages up to `max_size` (at least one, however large)."""
        total, n = 0, 0
        for item in self.buffer:
            if n and total + item.size > self.max_size:
                break
            total, n = total + item.size, n + 1
        batch, self.buffer = self.buffer[:n], self.buffer[n:]
        self.buffered -= total
        return batch

    def _on_timer(self) -> None:
        self._timer = None
        self._send_due()

    def _send(self, batch: list[Buffered]) -> None:
        raised = sum(1 for item in batch if item.raised)
        # Revoked (or expired) while buffered: Celery records and acknowledges them here.
        revoked = self.consumer.controller.state.revoked
        requests = [
            req for req, *_ in batch if not ((req.expires or req.id in revoked) and req.revoked())
        ]
        if not requests:
            self.running += 1
            self._ended(raised)
            return
        items = [self.kind.pack(req) for req in requests]
        failover.received_many([str(req.message.delivery_tag) for req in requests])
        self.running += 1

        def accepted(pid: int, time_accepted: float) -> None:
            for req in requests:
                req.on_accepted(pid, time_accepted)

        def ended(handed_back: bool) -> None:
            for req in requests:
                task_ready(req, successful=not handed_back)
                if handed_back:  # Redis was away: run them again later, as `worker.requeue`
                    req.reject(requeue=True)
                else:
                    req.acknowledge()
            self._ended(raised)

        def failed(exc_info: Any) -> None:
            # The pool process died, hit the hard time limit, or the batch raised: Celery's
            # own handling, request by request (requeue, or fail and acknowledge).
            for req in requests:
                req.on_failure(exc_info)
            self._ended(raised)

        def timed_out(soft: bool, timeout: float) -> None:
            # As Celery logs it for a task (the pool process is killed past the hard limit).
            kind = "Soft" if soft else "Hard"
            log.log(
                logging.WARNING if soft else logging.ERROR,
                "%s time limit (%ss) exceeded for a %s batch of %d messages",
                kind, timeout, self.kind.name, len(requests),
            )  # fmt: skip

        try:
            self.pool.apply_async(
                self.kind.execute,
                args=(items,),
                accept_callback=accepted,
                callback=ended,
                error_callback=failed,
                timeout_callback=timed_out,
                soft_timeout=self.soft_limit,
                timeout=self.hard_limit,
            )
        except Exception:  # the pool is closing (shutdown): the messages go back to the queue
            log.exception("could not send a %s batch to the pool", self.kind.name)
            for req in requests:
                task_ready(req, successful=False)
                req.reject(requeue=True)
            self._ended(raised)

    def _ended(self, raised: int) -> None:
        self.running -= 1
        if raised:
            self.raised -= raised
            self.consumer.qos.decrement_eventually(raised)
        self._send_due()
