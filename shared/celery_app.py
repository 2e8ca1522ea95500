"""The single place a Celery app is configured, for the worker and for the gateway's publisher."""

from __future__ import annotations

from collections.abc import Sequence

from celery import Celery
from kombu.entity import Queue

from shared.redis_clients import celery_redis
from shared.settings import Settings
from shared.tasks import DELIVER_WEBHOOK, PREDICT, QUEUE, WEBHOOK_QUEUE, WORKER_QUEUES


def create_celery(settings: Settings, include: Sequence[str] = ()) -> Celery:
    """A Celery app speaking JSON only, acknowledging late, with every timeout explicit."""
    app = Celery("mlqueue", include=list(include))
    # One Redis, or kombu's sentinel:// transport and Celery's Sentinel backend (master_name).
    redis = celery_redis(settings)
    app.conf.update(
        broker_url=redis.broker_url,
        result_backend=redis.backend_url,
        # JSON only: a pickled message from the broker would run code in the worker.
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        result_accept_content=["json"],
        # At-least-once: a message is acked after its task ran, and requeued if the child died.
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        broker_transport_options={
            "visibility_timeout": settings.visibility_timeout,
            # kombu's defaults scan for expired unacked messages only every ~100 s.
            "unacked_restore_interval": settings.unacked_restore_interval,
            "unacked_restore_throttle": 1,
            # A worker killed while holding the restore lock would otherwise block every
            # redelivery for kombu's default of 300 s.
            "unacked_mutex_expire": max(10, settings.visibility_timeout),
            # Priorities are queues: poll them always in QUEUES order (high, normal, low)
            # instead of kombu's default round robin, which would serve low as often as high.
            "queue_order_strategy": "priority",
            **redis.broker_options,
        },
        result_backend_transport_options={
            "visibility_timeout": settings.visibility_timeout,
            **redis.backend_options,
        },
        broker_connection_retry_on_startup=True,
        result_expires=settings.result_ttl,
        result_extended=True,
        task_track_started=True,
        task_soft_time_limit=settings.task_soft_time_limit,
        task_time_limit=settings.task_time_limit,
        task_default_queue=QUEUE,
        task_queues=[Queue(name) for name in WORKER_QUEUES],
        task_routes={
            PREDICT: {"queue": QUEUE},
            DELIVER_WEBHOOK: {"queue": WEBHOOK_QUEUE},
        },
        worker_concurrency=settings.worker_concurrency,
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
        timezone="UTC",
    )
    app.conf.update(redis.backend_conf)
    if redis.broker_ssl:
        app.conf.update(broker_use_ssl=redis.broker_ssl, redis_backend_use_ssl=redis.backend_ssl)
    return app
