"""The worker's model cache keeps at most `max_models` versions (and `max_bytes`), LRU first."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from shared.registry import MANIFEST, Registry
from shared.tasks import BatchJob
from tests.unit.conftest import CountingLoader, MockModel
from worker.model_cache import ModelCache
from worker.shadow import shadow_messages


@pytest.fixture(scope="module")
def registry(model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Registry:
    root = tmp_path_factory.mktemp("lru-models")
    for version in range(1, 6):
        folder = root / "demo" / str(version)
        shutil.copytree(model_dir / "demo" / "1", folder)
        manifest = json.loads((folder / MANIFEST).read_text())
        manifest["version"] = str(version)
        (folder / MANIFEST).write_text(json.dumps(manifest))
    return Registry(root, "demo")


def test_the_least_recently_used_version_goes_first(registry: Registry) -> None:
    loader = CountingLoader(MockModel.from_bytes)
    cache = ModelCache(registry, loader, max_models=2)
    for version in (1, 2, 1, 3):  # 1 is used again before 3 arrives: 2 is the one to go
        cache.get(f"demo:{version}")
    assert cache.loaded == [("demo", "1"), ("demo", "3")]
    assert loader.calls == 3
    cache.get("demo:2")  # loaded again, verified again
    assert loader.calls == 4 and cache.loaded == [("demo", "3"), ("demo", "2")]


def test_a_byte_budget_keeps_at_least_the_version_in_use(registry: Registry) -> None:
    size = len(registry.read_artifact(registry.resolve("demo:1")))
    cache = ModelCache(registry, CountingLoader(MockModel.from_bytes), max_bytes=2 * size)
    for version in range(1, 6):
        cache.get(f"demo:{version}")
    assert cache.loaded == [("demo", "4"), ("demo", "5")]
    tiny = ModelCache(registry, CountingLoader(MockModel.from_bytes), max_bytes=1)
    _, model = tiny.get("demo:1")
    assert tiny.loaded == [("demo", "1")] and model.n_features == 10


def test_no_limit_keeps_everything(registry: Registry) -> None:
    cache = ModelCache(registry, CountingLoader(MockModel.from_bytes))
    for version in range(1, 6):
        cache.get(f"demo:{version}")
    assert len(cache.loaded) == 5


def test_shadow_messages_carry_the_answered_rows_per_shadow_version() -> None:
    jobs: list[BatchJob] = [
        {"id": "a", "rows": [[1.0]], "shadow": "demo:4"},
        {"id": "b", "rows": [[2.0], [3.0]]},
        {"id": "c", "rows": [[4.0]], "shadow": "demo:4"},
        {"id": "d", "rows": [[5.0]], "shadow": "demo:4"},  # failed: nothing to compare
    ]
    live = {j["id"]: j["rows"] for j in jobs}
    succeeded = {"a": [10.0], "b": [20.0, 30.0], "c": [40.0]}
    messages = shadow_messages(jobs, live, succeeded, "demo:3")
    assert messages == [
        {"rows": [[1.0], [4.0]], "predictions": [10.0, 40.0], "model": "demo:3",
         "shadow": "demo:4"}
    ]  # fmt: skip
    assert np.isclose(sum(messages[0]["predictions"]), 50.0)
