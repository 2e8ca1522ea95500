"""Per-process worker state, built after fork and reused by every task in that process."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import partial

from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError, RedisError, TimeoutError
from redis.retry import Retry
from threadpoolctl import threadpool_limits

from shared.aliases import SyncAliasBook
from shared.errors import ServiceError
from shared.redis_clients import sync_redis
from shared.registry import Registry
from shared.replication import ReplicaWait
from shared.settings import Settings, get_settings
from worker.jobs import JobRecorder
from worker.model_cache import ModelCache
from worker.sklearn_model import SklearnModel

log = logging.getLogger(__name__)
STORE_RETRIES = 10  # about 4 s of backoff in all


@dataclass
class Runtime:
    """What a worker process keeps between tasks: settings, job store, loaded models."""

    settings: Settings
    jobs: JobRecorder
    models: ModelCache

    @classmethod
    def create(cls, settings: Settings) -> Runtime:
        """Connect to Redis and open the registry (cheap; models load on `warm` or first use)."""
        # Ride out a Redis restart of a few seconds inside the job instead of failing it.
        redis = sync_redis(
            settings,
            socket_timeout=10,
            retry=Retry(ExponentialBackoff(cap=0.5, base=0.05), STORE_RETRIES),
            retry_on_error=[ConnectionError, TimeoutError],
        )
        registry = Registry(
            settings.model_dir,
            settings.default_model,
            cache_seconds=1.0,
            aliases=SyncAliasBook(redis),
        )
        loader = partial(SklearnModel.from_bytes, fast=settings.fast_predict)
        jobs = JobRecorder(
            redis, settings.result_ttl, settings.max_attempts, ReplicaWait.of(settings)
        )
        models = ModelCache(
            registry, loader, settings.max_loaded_models, settings.max_loaded_model_bytes
        )
        return cls(settings, jobs, models)

    def warm(self) -> None:
        """Load the default model now, so the first task does not pay for it."""
        try:
            self.models.get("default")
        except ServiceError as exc:  # the worker still serves other models, and says why
            log.error("default model not loaded: %s", exc.message)
        except RedisError as exc:  # "default" may go through an alias: load it on first use
            log.error("default model not loaded: aliases unreadable: %s", exc)


_runtime: Runtime | None = None


def init_process(settings: Settings | None = None) -> Runtime:
    """Set up this process: cap BLAS threads, connect, warm the default model."""
    global _runtime
    settings = settings or get_settings()
    # Prefork children each running multithreaded BLAS/OpenMP would oversubscribe the cores.
    threadpool_limits(limits=settings.blas_threads)
    _runtime = Runtime.create(settings)
    _runtime.warm()
    return _runtime


def runtime() -> Runtime:
    """This process's runtime, created on first use if no signal did it."""
    return _runtime or init_process()
