"""Unit fixtures: fakeredis, a model that is easy to check, and the gateway with fakes injected."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fakeredis
import numpy as np
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from gateway import deps, keys
from gateway.app import create_app
from gateway.events import JobEvents
from gateway.queue import JobQueue
from gateway.store import JobStore
from shared.registry import Registry
from shared.settings import Settings
from shared.tasks import SCORE_CHUNK
from worker.csv_chunks import score_chunk
from worker.jobs import JobRecorder
from worker.model_cache import ModelCache
from worker.predict import run_batch
from worker.runtime import Runtime


class MockModel:
    """Predicts the sum of each row, so every prediction can be checked by hand."""

    n_features = 10

    def train(self, X: Any, y: Any) -> MockModel:
        return self

    def predict(self, X: Any) -> Any:
        return np.asarray(X).sum(axis=1)

    def save(self, path: Path) -> None:
        pass

    @classmethod
    def load(cls, path: Path) -> MockModel:
        return cls()

    @classmethod
    def from_bytes(cls, data: bytes) -> MockModel:
        return cls()


class FakeCelery:
    """Stands in for the publisher: records each message, and runs it at once when `run` is on."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.sent: list[dict[str, Any]] = []
        self.run = True

    def send_task(self, name: str, kwargs: dict[str, Any], task_id: str, **_: Any) -> None:
        self.sent.append({"name": name, "kwargs": kwargs, "task_id": task_id})
        if self.run:
            if name == SCORE_CHUNK:
                score_chunk(self.runtime, **kwargs)
            else:
                run_batch(self.runtime, kwargs["jobs"], kwargs["model"])


@pytest.fixture
def settings(model_dir: Path) -> Settings:
    return Settings(
        model_dir=model_dir,
        default_model="demo",
        max_rows_per_job=100,
        max_body_bytes=64 * 1024,
        sync_timeout=2,
    )


@pytest.fixture
def server() -> fakeredis.FakeServer:
    return fakeredis.FakeServer()


@pytest.fixture
def runtime(settings: Settings, server: fakeredis.FakeServer) -> Runtime:
    """A worker runtime on fakeredis whose models all load as `MockModel`."""
    redis = fakeredis.FakeRedis(server=server)
    registry = Registry(settings.model_dir, settings.default_model)
    return Runtime(
        settings,
        JobRecorder(redis, settings.result_ttl),
        ModelCache(registry, loader=MockModel.from_bytes),
    )


@pytest.fixture
def celery(runtime: Runtime) -> FakeCelery:
    return FakeCelery(runtime)


@pytest.fixture
def app(settings: Settings, server: fakeredis.FakeServer, celery: FakeCelery) -> Iterator[FastAPI]:
    """The gateway with its queue, Redis and registry replaced through dependency overrides."""
    app = create_app(settings)
    redis = fakeredis.FakeAsyncRedis(server=server)
    registry = Registry(settings.model_dir, settings.default_model)
    store = JobStore(redis, settings.result_ttl, keys.admin_owners(settings))
    queue = JobQueue(settings, registry, store, JobEvents(redis), celery)  # type: ignore[arg-type]
    app.dependency_overrides[deps.get_queue] = lambda: queue
    app.dependency_overrides[deps.get_redis] = lambda: redis
    app.dependency_overrides[deps.get_registry] = lambda: registry
    yield app
    app.dependency_overrides.clear()


@pytest.fixture
def client(app: FastAPI) -> TestClient:
    return TestClient(app)
