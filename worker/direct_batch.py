"""The body of a batch of direct `mlqueue.predict` tasks, run in a pool process.

`worker.direct_strategy` coalesces the one-row tasks other services send straight to Celery;
here each batch does what `run_job` does for one task, for all of them at once: every task is
its own job (a record made on start, sticky final states, `max_attempts`), the rows of all live
jobs of a model go through one model call, and a job whose rows are bad, or make the model raise,
fails alone. Then each job's outcome goes to the job store and each task's result (or exception,
the one `run_job` would raise) to Celery's result backend, each in one round trip. The consumer
acknowledges the messages only after this returns: a process or worker dying before loses
nothing, since the messages are delivered again and the job store answers what already ended.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

from celery.backends.base import Backend

from shared.errors import JobConflict, ServiceError
from shared.tasks import BatchJob
from worker import direct_results, observe
from worker.direct_results import Outcome
from worker.direct_tasks import DirectTask
from worker.failures import classify, ran_or_handed_back, task_error
from worker.job_events import failed_labels
from worker.predict import Failures, already_ended, predict_together, stored_failures
from worker.runtime import Runtime, runtime
from worker.shadow import ShadowSender, shadow_messages

log = logging.getLogger(__name__)


def execute(tasks: list[DirectTask]) -> bool:
    """The pool's entry point; True when every message must be handed back (Redis is away)."""
    from worker.celery_app import app  # the app this pool process was forked with
    from worker.tasks import send_shadow

    return run_direct_batch(runtime(), app.backend, tasks, send_shadow)


def run_direct_batch(
    rt: Runtime,
    backend: Backend,
    tasks: Sequence[DirectTask],
    on_shadow: ShadowSender | None = None,
) -> bool:
    """Run `tasks` and store every outcome; True if Redis failed and none may be acknowledged.

    Any other error ends the batch with it: the consumer then fails each task with it, as
    Celery fails a task whose body raised.
    """
    started = time.perf_counter()
    groups: dict[str, dict[str, DirectTask]] = {}
    for task in tasks:  # a task id sent twice runs once here: both messages get its outcome
        groups.setdefault(task.model, {}).setdefault(task.id, task)
    outcomes: dict[str, Outcome] = {}

    def run() -> None:
        for model, group in groups.items():
            outcomes.update(_run_model(rt, model, group, on_shadow))
        direct_results.store(backend, tasks, outcomes)

    if ran_or_handed_back(run, "direct batch", {"tasks": len(tasks)}):
        return True
    log.info(
        "direct batch done",
        extra={"tasks": len(tasks), "models": len(groups),
               "failed": sum(isinstance(o, Exception) for o in outcomes.values()),
               "duration_ms": round(1000 * (time.perf_counter() - started), 2)},
    )  # fmt: skip
    return False


def _run_model(
    rt: Runtime, model: str, group: dict[str, DirectTask], on_shadow: ShadowSender | None
) -> dict[str, Outcome]:
    """The outcome of each task of one model spec. The spec is pinned task by task, as
    `run_job` pins it: an alias splitting traffic picks each task's version from its id, and
    an alias with a shadow version gets the answered rows scored by it afterwards."""
    started = time.perf_counter()
    sizes = {task_id: task.n_rows for task_id, task in group.items()}
    statuses = rt.jobs.start_many(list(sizes.items()), model)
    outcomes: dict[str, Outcome] = {}
    by_spec: dict[str, dict[str, Any]] = {}  # pinned "name:version" -> live task id -> rows
    shadows: dict[str, str] = {}  # task id -> its shadow "name:version"
    for (task_id, task), status in zip(group.items(), statuses, strict=True):
        if status != "running":  # a redelivery, a task id sent again, a cancel: as `run_job`
            outcomes[task_id] = _already_ended_outcome(rt, task_id, status, model)
            continue
        observe.job_started(task_id, model, sizes[task_id])
        try:
            pinned = rt.models.registry.pin(model, task_id)
        except ServiceError:  # an unknown model: `predict_together` fails these, naming it
            by_spec.setdefault(model, {})[task_id] = task.rows
            continue
        by_spec.setdefault(pinned.spec, {})[task_id] = task.rows
        if pinned.shadow is not None:
            shadows[task_id] = f"{pinned.shadow.name}:{pinned.shadow.version}"
    for spec, live in by_spec.items():
        failures: Failures = {}
        info, succeeded = predict_together(rt, live, spec, failures)
        failed = stored_failures(failures)
        rt.jobs.finish_many(info.version if info else "", succeeded, failed)
        seconds = time.perf_counter() - started
        if info is not None:  # else nothing was predicted
            labels = {"model": info.name, "version": info.version}
            for task_id, predictions in succeeded.items():
                outcomes[task_id] = {"predictions": predictions, **labels}
                observe.job_ended(task_id, info.name, info.version, sizes[task_id], seconds)
            if on_shadow is not None:
                _send_shadows(on_shadow, spec, live, succeeded, shadows)
        for task_id, exc in failures.items():
            outcomes[task_id] = task_error(exc, classify(exc))
            error_type = failed[task_id][0]
            name, version = failed_labels(model, error_type)
            observe.job_ended(task_id, name, version, sizes[task_id], seconds, error_type)
    return outcomes


def _send_shadows(
    on_shadow: ShadowSender,
    spec: str,
    live: dict[str, Any],
    succeeded: dict[str, list[float]],
    shadows: dict[str, str],
) -> None:
    """One shadow message per shadow version, with the answered rows that asked for it (sent
    after the answers are stored: they never wait for it)."""
    jobs: list[BatchJob] = [
        {"id": task_id, "rows": live[task_id], "shadow": shadows[task_id]}
        for task_id in succeeded
        if task_id in shadows
    ]
    for message in shadow_messages(jobs, live, succeeded, spec):
        on_shadow(message)


def _already_ended_outcome(rt: Runtime, task_id: str, status: str, model: str) -> Outcome:
    try:
        return already_ended(rt, task_id, status, model)
    except JobConflict as exc:
        return exc
