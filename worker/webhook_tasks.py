"""The webhook delivery task: a thin wrapper over `worker.webhooks.deliver`."""

from __future__ import annotations

from shared.tasks import DELIVER_WEBHOOK
from worker.celery_app import app, settings
from worker.runtime import runtime
from worker.webhooks import deliver


@app.task(name=DELIVER_WEBHOOK, ignore_result=True)
def deliver_webhook(job_id: str) -> str:
    """One attempt at job `job_id`'s completion webhook (internal: sent by the sweep)."""
    return deliver(runtime().jobs.redis, settings, job_id)
