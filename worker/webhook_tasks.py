"""The webhook delivery task: hands one attempt to this process's delivery threads.

A delivery waits on someone else's server, up to `MLQUEUE_WEBHOOK_TIMEOUT` seconds; done in the
task itself, a few slow receivers would hold every pool process and stall the predictions queued
behind them. The task therefore returns at once and a small thread pool per process makes the
HTTP call. Nothing is lost if the process dies first: the sweep leased the attempt for
`shared.webhooks.LEASE_SECONDS` and sends it again once the lease ends (delivery is at least
once, and receivers drop repeats by `Mlqueue-Delivery`).
"""

from __future__ import annotations

import logging
import threading
from concurrent.futures import ThreadPoolExecutor

from shared.tasks import DELIVER_WEBHOOK
from worker.celery_app import app, settings
from worker.runtime import runtime
from worker.webhooks import deliver

log = logging.getLogger(__name__)
_lock = threading.Lock()
_pool: ThreadPoolExecutor | None = None
_waiting = threading.BoundedSemaphore(4 * settings.webhook_threads)


@app.task(name=DELIVER_WEBHOOK, ignore_result=True)
def deliver_webhook(job_id: str) -> bool:
    """One attempt at job `job_id`'s completion webhook (internal: sent by the sweep); False
    when this process has too many attempts waiting already (the lease sends it again)."""
    if not _waiting.acquire(blocking=False):
        log.warning(
            "webhook attempt left to its lease: delivery threads busy", extra={"job_id": job_id}
        )
        return False
    try:
        _threads().submit(_attempt, job_id)
    except BaseException:
        _waiting.release()
        raise
    return True


def _attempt(job_id: str) -> None:
    try:
        deliver(runtime().jobs.redis, settings, job_id)
    except Exception:  # logged here: nobody waits for this thread's outcome
        log.exception("webhook attempt failed", extra={"job_id": job_id})
    finally:
        _waiting.release()


def _threads() -> ThreadPoolExecutor:
    # Made on first use, in the pool process (threads do not survive Celery's fork).
    global _pool
    with _lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(settings.webhook_threads, thread_name_prefix="webhook")
        return _pool
