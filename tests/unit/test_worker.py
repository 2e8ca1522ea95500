"""The worker's task body, validation, model cache and registry, called directly (no Celery)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import fakeredis
import numpy as np
import pytest

from shared import jobstore
from shared.errors import InvalidInput, JobConflict, ModelError, ModelNotFound
from shared.registry import Registry
from shared.schemas import ModelInfo
from tests.unit.conftest import CountingLoader
from worker.failures import PredictionFailed
from worker.inference import to_matrix
from worker.jobs import JobRecorder
from worker.model_cache import ModelCache
from worker.predict import run_job
from worker.runtime import Runtime
from worker.sklearn_model import SklearnModel
from worker.train import train_demo

ROW = [0.5] * 10


def view(runtime: Runtime, job_id: str) -> dict[str, object]:
    fields = runtime.jobs.redis.hgetall(jobstore.job_key(job_id))
    return jobstore.to_view(job_id, {k.decode(): v for k, v in fields.items()}).model_dump()


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ([], "non-empty list"),
        ("abc", "non-empty list"),
        ([ROW, ROW[:9]], "row 1: expected 10 features, got 9"),
        ([ROW, "x"], "row 1: expected a list of 10 numbers, got str"),
        ([[*ROW[:3], "1.5", *ROW[4:]]], "row 0: column 3: expected a number, got str"),
        ([[*ROW[:3], True, *ROW[4:]]], "row 0: column 3: expected a number, got bool"),
        ([[*ROW[:3], None, *ROW[4:]]], "row 0: column 3: expected a number, got NoneType"),
        ([[*ROW[:9], float("nan")]], "row 0: column 9: non-finite value nan"),
    ],
)
def test_worker_validation_names_row_and_column(rows: object, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        to_matrix(rows, 10)


def test_worker_validation_reports_the_first_five_bad_rows() -> None:
    with pytest.raises(InvalidInput) as info:
        to_matrix([[1.0]] * 8, 10)
    assert info.value.details["errors"] == [
        f"row {i}: expected 10 features, got 1" for i in range(5)
    ]


def test_many_jobs_in_one_process_load_the_model_once(
    runtime: Runtime, loader: CountingLoader
) -> None:
    for i in range(25):
        result = run_job(runtime, f"job-{i}", [ROW] * (i + 1), "default")
        assert result["predictions"] == [5.0] * (i + 1)
    assert loader.calls == 1


def test_a_new_version_is_loaded_once_too(
    runtime: Runtime, loader: CountingLoader, tmp_path: Path
) -> None:
    root = tmp_path / "models"
    shutil.copytree(runtime.models.registry.root, root)
    runtime.models.registry = Registry(root, "demo")
    run_job(runtime, "a", [ROW], "default")
    train_demo(runtime.models.registry, "demo")
    assert run_job(runtime, "b", [ROW], "default")["version"] == "2"
    assert run_job(runtime, "c", [ROW], "demo:1")["version"] == "1"
    assert loader.calls == 2


def test_a_direct_task_gets_a_record(runtime: Runtime) -> None:
    result = run_job(runtime, "direct-1", [ROW, ROW], "default")
    assert result == {"predictions": [5.0, 5.0], "model": "demo", "version": "1"}
    job = view(runtime, "direct-1")
    assert job["status"] == "succeeded" and job["kind"] == "task" and job["n_rows"] == 2


def test_bad_rows_fail_the_job_and_the_next_job_still_runs(runtime: Runtime) -> None:
    with pytest.raises(InvalidInput):
        run_job(runtime, "bad", [ROW[:3]], "default")
    error = view(runtime, "bad")["error"]
    assert error == {"type": "InvalidInput", "message": "row 0: expected 10 features, got 3"}
    assert run_job(runtime, "good", [ROW], "default")["predictions"] == [5.0]


def test_an_unknown_model_fails_the_job(runtime: Runtime) -> None:
    with pytest.raises(ModelNotFound):
        run_job(runtime, "m", [ROW], "other")
    assert view(runtime, "m")["status"] == "failed"


def test_a_model_that_raises_fails_only_its_job(runtime: Runtime) -> None:
    class Poison:
        n_features = 10

        def predict(self, X: object) -> object:
            raise ZeroDivisionError("boom")

    runtime.models._loader = lambda path: Poison()  # type: ignore[assignment,return-value]
    with pytest.raises(PredictionFailed, match="ZeroDivisionError: boom"):
        run_job(runtime, "poison", [ROW], "default")
    assert view(runtime, "poison")["error"] == {
        "type": "PredictionFailed",
        "message": "ZeroDivisionError: boom",
    }


def test_a_redelivered_job_returns_the_stored_result(runtime: Runtime) -> None:
    first = run_job(runtime, "dup", [ROW], "default")
    runtime.models._loader = lambda path: pytest.fail("must not load or predict again")
    runtime.models._models.clear()
    assert run_job(runtime, "dup", [ROW], "default")["predictions"] == first["predictions"]


def test_a_cancelled_job_is_not_predicted(runtime: Runtime, loader: CountingLoader) -> None:
    redis = runtime.jobs.redis
    redis.hset(
        jobstore.job_key("c"), mapping=jobstore.new_record("c", kind="json", model="demo", n_rows=1)
    )
    call = jobstore.cancel_call("c")
    redis.register_script(jobstore.CANCEL)(keys=call.keys, args=call.args)
    with pytest.raises(JobConflict, match="job c is cancelled"):
        run_job(runtime, "c", [ROW], "default")
    assert loader.calls == 0
    assert view(runtime, "c")["status"] == "cancelled"


def test_a_final_state_is_never_overwritten() -> None:
    jobs = JobRecorder(fakeredis.FakeRedis(), ttl=60, max_attempts=3)
    assert jobs.start("j", "demo", 1) == "running"
    assert jobs.succeed("j", "1", [1.0]) == "succeeded"
    assert jobs.fail("j", "X", "late duplicate") == "succeeded"
    assert jobs.succeed("j", "1", [2.0]) == "succeeded"
    assert jobs.stored("j") == ("1", [1.0], None)
    assert 0 < jobs.redis.ttl(jobstore.job_key("j")) <= 60


def test_batch_records_survive_a_redis_that_lost_its_scripts() -> None:
    # The batch pipelines send bare EVALSHA; a restarted Redis (or a promoted replica) has no
    # scripts: they are loaded and the pipeline sent again.
    redis = fakeredis.FakeRedis()
    jobs = JobRecorder(redis, ttl=60, max_attempts=3)
    assert jobs.start_many([("a", 1), ("b", 2)], "demo") == ["running", "running"]
    redis.script_flush()
    jobs.finish_many("1", {"a": [1.5]}, {"b": ("InvalidInput", "bad row")})
    assert jobs.start_many([("c", 1)], "demo") == ["running"]
    assert jobs.stored("a") == ("1", [1.5], None)
    assert redis.hget(jobstore.job_key("b"), "status") == b"failed"


def test_the_real_model_predicts_like_scikit_learn(
    model_dir: Path, demo_info: ModelInfo, diabetes_rows: list[list[float]]
) -> None:
    cache = ModelCache(Registry(model_dir, "demo"))
    _, model = cache.get("default")
    estimator = SklearnModel.load(model_dir / "demo" / "1" / "model.skops").estimator
    X = np.asarray(diabetes_rows[:50])
    assert model.predict(X).tolist() == estimator.predict(X).tolist()
    assert model.n_features == demo_info.n_features == 10


def test_registry_resolves_names_and_versions(model_dir: Path, tmp_path: Path) -> None:
    root = tmp_path / "m"
    shutil.copytree(model_dir, root)
    registry = Registry(root, "demo")
    assert registry.resolve("default").version == "1"
    train_demo(registry, "demo")
    assert registry.resolve("default").version == "2"
    assert registry.resolve("demo").version == "2"
    assert registry.resolve("demo:1").version == "1"
    assert [(m.name, m.version) for m in registry.all_versions()] == [("demo", "2"), ("demo", "1")]
    for bad in ("demo:3", "other", "../etc", "demo:x", "..", ".", ".demo"):
        with pytest.raises(ModelNotFound):
            registry.resolve(bad)


def test_registry_refuses_a_tampered_artifact(model_dir: Path, tmp_path: Path) -> None:
    root = tmp_path / "m"
    shutil.copytree(model_dir, root)
    artifact = root / "demo" / "1" / "model.skops"
    artifact.write_bytes(artifact.read_bytes() + b"\x00")
    cache = ModelCache(Registry(root, "demo"), loader=lambda p: pytest.fail("must not load"))
    with pytest.raises(ModelError, match="does not match the manifest"):
        cache.get("default")


def test_manifest_records_what_the_issue_asks(model_dir: Path) -> None:
    manifest = json.loads((model_dir / "demo" / "1" / "manifest.json").read_text())
    assert set(manifest) >= {
        "name",
        "version",
        "created_at",
        "feature_names",
        "n_features",
        "framework_version",
        "metrics",
        "sha256",
    }
    assert manifest["estimator"] == "RandomForestRegressor"
    assert 0 < manifest["metrics"]["r2"] < 1 and manifest["metrics"]["mae"] > 0
