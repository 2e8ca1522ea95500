"""The worker's Celery app: `celery -A worker.celery_app worker -Q <shared.tasks.QUEUES>`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from celery import signals
from celery.exceptions import TimeLimitExceeded

from shared import gc_tuning
from shared.celery_app import create_celery
from shared.logs import configure_logging
from shared.redis_clients import sync_redis
from shared.replication import ReplicaWait
from shared.settings import get_settings
from shared.tasks import VERIFY_MODEL
from worker import failover, forest_kernel, job_events, kombu_patch, metrics, runtime
from worker.heartbeat import Heartbeat
from worker.jobs import JobRecorder
from worker.reaper import Reaper
from worker.resender import Resender
from worker.webhooks import WebhookSweep

kombu_patch.apply()  # before any broker connection exists
settings = get_settings()
app = create_celery(
    settings,
    include=["worker.tasks", "worker.csv_tasks", "worker.webhook_tasks", "worker.model_tasks"],
)
_heartbeat: Heartbeat | None = None
_recorder: JobRecorder | None = None


@signals.setup_logging.connect
def _setup_logging(**_: Any) -> None:
    configure_logging(settings.log_level, [job_events.CurrentTaskId()])


@signals.worker_init.connect
def _setup_metrics(**_: Any) -> None:
    # In the main process, before the pool forks: children inherit the multiprocess directory.
    metrics.setup(settings)


@signals.worker_init.connect
def _compile_forest_walk(**_: Any) -> None:
    # Before the pool forks too: the children inherit the compiled walk, ready for the first task.
    forest_kernel.compile_kernel()


@signals.worker_process_shutdown.connect
def _child_exited(pid: int, **_: Any) -> None:
    metrics.process_exited(pid)


@signals.worker_process_init.connect
def _init_process(**_: Any) -> None:
    # After fork: each prefork child gets its own Redis connection and its own loaded model.
    runtime.init_process(settings)


@signals.worker_ready.connect
def _start_heartbeat(sender: Any, **_: Any) -> None:
    global _heartbeat
    redis = sync_redis(settings, socket_timeout=5)
    resender = Resender(
        redis,
        _resend,
        # Past this, a queued job's message is neither waiting, nor reserved, nor restorable.
        grace=settings.visibility_timeout
        + 2 * (settings.unacked_restore_interval + settings.heartbeat_interval),
        interval=settings.heartbeat_interval,
    )
    reaper = Reaper(
        redis,
        _resend,
        # Past this, nothing can still be running a job begun before, nor redeliver it.
        stuck_after=settings.task_time_limit
        + settings.visibility_timeout
        + 2 * (settings.unacked_restore_interval + settings.heartbeat_interval),
        max_attempts=settings.max_attempts,
        ttl=settings.result_ttl,
        interval=settings.heartbeat_interval,
    )
    takeover = failover.install(redis, sender.hostname, settings.heartbeat_interval)
    deliveries = WebhookSweep(redis, _resend, settings.heartbeat_interval)
    chores = [
        lambda: resender.sweep(before=takeover.died_before()),
        takeover.sweep,
        reaper.sweep,
        deliveries.sweep,
    ]
    _heartbeat = Heartbeat(redis, sender.hostname, settings.heartbeat_interval, chores)
    _heartbeat.start()
    metrics.serve(settings)
    gc_tuning.settle()  # the consumer's start-up objects, out of the GC's way


def _resend(task: str, message_id: str, kwargs: Mapping[str, Any], queue: str) -> None:
    # No repr of rows in the message headers (CPU, and row data in monitoring tools).
    app.send_task(
        task,
        kwargs=kwargs,
        task_id=message_id,
        queue=queue,
        argsrepr="()",
        kwargsrepr="<re-sent>",
    )


@signals.worker_shutdown.connect
def _stop_heartbeat(**_: Any) -> None:
    if _heartbeat is not None:
        _heartbeat.stop()
    metrics.shutdown()


@signals.task_failure.connect
def _record_hard_time_limit(
    task_id: str,
    exception: BaseException,
    kwargs: dict[str, Any] | None = None,
    sender: Any = None,
    **_: Any,
) -> None:
    # A hard time limit kills the child before it can record anything: the main process does,
    # for the task's job, a CSV chunk's job, or every job of a batch message. (Soft limits and
    # other failures are recorded by the task itself, in the child; final states are sticky.)
    global _recorder
    # A model upload is no job: its gateway answers 503 when no outcome comes.
    if not isinstance(exception, TimeLimitExceeded) or getattr(sender, "name", "") == VERIFY_MODEL:
        return
    if _recorder is None:
        redis = sync_redis(settings, socket_timeout=5)
        _recorder = JobRecorder(
            redis, settings.result_ttl, settings.max_attempts, ReplicaWait.of(settings)
        )
    kwargs = kwargs or {}
    jobs = kwargs.get("jobs")  # a batch message of JSON jobs
    if isinstance(jobs, list):
        job_ids = [str(job["id"]) for job in jobs]
    else:  # a CSV chunk names its job; a direct task is its own job
        job_ids = [str(kwargs.get("job_id", task_id))]
    message = f"the prediction exceeded its hard time limit of {settings.task_time_limit} s"
    for job_id in job_ids:
        _recorder.fail(job_id, "TimeLimitExceeded", message)
