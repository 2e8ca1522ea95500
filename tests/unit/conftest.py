"""Unit fixtures: fakeredis, a model that is easy to check, and the gateway with fakes injected."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import fakeredis
import numpy as np
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from gateway.app import create_app
from gateway.state import GatewayState
from shared.registry import Registry
from shared.settings import Settings
from shared.tasks import QUEUE, SCORE_CHUNK, VERIFY_MODEL
from worker.csv_chunks import score_chunk
from worker.jobs import JobRecorder
from worker.model_cache import ModelCache
from worker.model_install import verify_upload
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


class CountingLoader:
    """A model loader that counts its calls: how often a model was really loaded, not cached."""

    def __init__(self, load: Callable[[bytes], Any]) -> None:
        self.load = load
        self.calls = 0

    def __call__(self, data: bytes) -> Any:
        self.calls += 1
        return self.load(data)


class FakePublisher:
    """Stands in for the broker: records each message, and runs it at once when `run` is on."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.sent: list[dict[str, Any]] = []
        self.run = True

    def encoded(self, *_: Any, **__: Any) -> None:
        """None: every message comes through `send`, to be recorded and run."""
        return None

    async def send(
        self,
        task: str,
        message_id: str,
        kwargs: Mapping[str, Any],
        summary: str,
        queue: str = QUEUE,
    ) -> None:
        self.sent.append(
            {"name": task, "kwargs": dict(kwargs), "task_id": message_id, "queue": queue}
        )
        if self.run:
            if task == SCORE_CHUNK:
                score_chunk(self.runtime, **kwargs)
            elif task == VERIFY_MODEL:
                rt = self.runtime
                args = (kwargs["upload_id"], kwargs["name"], kwargs["format"])
                verify_upload(rt.settings, rt.jobs.redis, rt.models.registry, *args)
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
def loader() -> CountingLoader:
    return CountingLoader(MockModel.from_bytes)


@pytest.fixture
def runtime(settings: Settings, server: fakeredis.FakeServer, loader: CountingLoader) -> Runtime:
    """A worker runtime on fakeredis whose models all load as `MockModel` (counted by `loader`)."""
    redis = fakeredis.FakeRedis(server=server)
    registry = Registry(settings.model_dir, settings.default_model)
    return Runtime(
        settings,
        JobRecorder(redis, settings.result_ttl, settings.max_attempts),
        ModelCache(registry, loader),
    )


@pytest.fixture
def publisher(runtime: Runtime) -> FakePublisher:
    return FakePublisher(runtime)


@pytest.fixture
def state(
    settings: Settings, server: fakeredis.FakeServer, publisher: FakePublisher
) -> GatewayState:
    """The gateway's state on fakeredis, with the fake publisher."""
    return GatewayState.create(
        settings, redis=fakeredis.FakeAsyncRedis(server=server), publisher=publisher
    )


@pytest.fixture
def app(settings: Settings, state: GatewayState) -> FastAPI:
    """The gateway with the test's state in place of the one its lifespan would open."""
    app = create_app(settings)
    app.state.gateway = state
    return app


@pytest.fixture
def client(app: FastAPI) -> TestClient:
    return TestClient(app)
