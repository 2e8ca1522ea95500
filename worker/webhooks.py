"""Completion webhooks, worker side: the sweep that sends due deliveries, and one delivery.

See `shared.webhooks` for the schedule. The sweep runs with the heartbeat (one worker at a time);
a delivery is the `mlqueue.deliver_webhook` task on the `mlqueue.webhooks` queue, which workers
take last, and the task hands the HTTP call to a thread (`worker.webhook_tasks`), so deliveries
never hold up predictions, however slow a receiver is.
"""

from __future__ import annotations

import logging
import random
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Mapping
from typing import Any

import orjson
from redis import Redis

from shared import jobstore, webhooks
from shared.errors import InvalidInput
from shared.redisio import text
from shared.settings import Settings

log = logging.getLogger(__name__)
LOCK = f"{jobstore.PREFIX}:webhooks:lock"
MAX_PER_SWEEP = 200
FINAL = ("succeeded", "failed", "cancelled")
Send = Callable[[str, str, Mapping[str, Any], str], None]  # task, message id, kwargs, queue


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    # A redirect could point the delivery at an address the guard refused: not followed.
    def redirect_request(self, *_: Any, **__: Any) -> None:
        return None


_opener = urllib.request.build_opener(_NoRedirects)


class WebhookSweep:
    """Sends the deliveries that are due; called periodically by every worker."""

    def __init__(self, redis: Redis, send: Send, interval: float) -> None:
        self.redis = redis
        self.send = send
        self.interval = interval

    def sweep(self) -> int:
        """Send due deliveries; returns how many were sent."""
        # Held a little less than the interval: one sweep per interval across all workers.
        if not self.redis.set(LOCK, "1", nx=True, px=max(10, int(self.interval * 900))):
            return 0
        now = time.time()
        sent = 0
        for member in self.redis.zrangebyscore(webhooks.DUE, "-inf", now, 0, MAX_PER_SWEEP):
            job_id = text(member)
            status, state = self.redis.hmget(jobstore.job_key(job_id), ["status", "webhook_state"])
            if status is None or text(state) in ("delivered", "failed"):
                self.redis.zrem(webhooks.DUE, job_id)  # expired, or done with
            elif text(status) not in FINAL:
                self.redis.zadd(webhooks.DUE, {job_id: now + 1.0})  # look again in a second
            else:
                # Leased: if this message is lost, the job is due again after the lease.
                self.redis.zadd(webhooks.DUE, {job_id: now + webhooks.LEASE_SECONDS})
                self.send(webhooks.DELIVER, str(uuid.uuid4()), {"job_id": job_id}, webhooks.QUEUE)
                sent += 1
        return sent


def deliver(redis: Redis, settings: Settings, job_id: str) -> str:
    """One attempt at a job's webhook; returns its state afterwards."""
    key = jobstore.job_key(job_id)
    names = ["status", "model", "version", "error_type", "error", "callback_url", "kind"]
    fields = dict(zip(names, (text(v) for v in redis.hmget(key, names)), strict=True))
    state = text(redis.hget(key, "webhook_state"))
    if not fields["status"] or not fields["callback_url"] or state in ("delivered", "failed"):
        redis.zrem(webhooks.DUE, job_id)
        return state or "missing"
    redis.hsetnx(key, "webhook_delivery", str(uuid.uuid4()))  # one id for every attempt
    delivery_id = text(redis.hget(key, "webhook_delivery"))
    attempt = int(redis.hincrby(key, "webhook_attempts", 1))
    body = orjson.dumps(_payload(redis, settings, job_id, fields))
    status = _post(settings, fields["callback_url"], body, delivery_id)
    if 200 <= status < 300:
        outcome = "delivered"
    elif attempt >= settings.webhook_max_attempts:
        outcome = "failed"
    else:
        outcome = "retrying"
        wait = webhooks.backoff(attempt, settings.webhook_backoff_seconds, random.uniform(-1, 1))
        redis.zadd(webhooks.DUE, {job_id: time.time() + wait})
    redis.hset(key, mapping={"webhook_state": outcome, "webhook_last_status": str(status)})
    if outcome != "retrying":
        redis.zrem(webhooks.DUE, job_id)
    log.info(
        "webhook attempt",
        extra={"job_id": job_id, "attempt": attempt, "status": status, "outcome": outcome},
    )
    return outcome


def _payload(
    redis: Redis, settings: Settings, job_id: str, fields: Mapping[str, str]
) -> dict[str, Any]:
    error = (
        {"type": fields["error_type"], "message": fields["error"]} if fields["error_type"] else None
    )
    payload: dict[str, Any] = {
        "job_id": job_id,
        "status": fields["status"],
        "model": fields["model"],
        "version": fields["version"] or None,
        "error": error,
        "result_url": f"{settings.public_url.rstrip('/')}/v1/jobs/{job_id}/result",
    }
    if fields["kind"] == "json" and fields["status"] == "succeeded":
        result = redis.hget(jobstore.job_key(job_id), "result")
        if result is not None and len(result) <= settings.webhook_max_data_bytes:
            payload["data"] = orjson.loads(result)
    return payload


def _post(settings: Settings, url: str, body: bytes, delivery_id: str) -> int:
    """POST the signed body; the receiver's HTTP status, or 0 when it did not answer (or the
    guard refuses the address it resolves to now)."""
    assert settings.webhook_secret is not None
    try:
        webhooks.check_url(url, settings.webhook_allowed_hosts)  # again: DNS may have changed
    except InvalidInput:
        return 0
    signature = webhooks.signature(
        settings.webhook_secret.get_secret_value(), int(time.time()), body
    )
    # check_url allowed only http and https: no file: or custom scheme reaches urllib.
    request = urllib.request.Request(  # noqa: S310
        url,
        data=body,
        method="POST",
        headers={
            "Content-Type": "application/json",
            "User-Agent": "mlqueue-webhooks",
            webhooks.SIGNATURE_HEADER: signature,
            webhooks.DELIVERY_HEADER: delivery_id,
        },
    )
    try:
        with _opener.open(request, timeout=settings.webhook_timeout) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except (urllib.error.URLError, OSError, ValueError):
        return 0
