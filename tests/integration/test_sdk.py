"""The Python SDK (`client.Client`, `client.AsyncClient`) against the real system: a gateway that
requires API keys, a Celery worker and Redis. Predictions are checked against model.predict."""

from __future__ import annotations

import asyncio
import csv
import io
from pathlib import Path

import httpx
import numpy as np
import pytest

from client import (
    ApiError,
    AsyncClient,
    Client,
    Conflict,
    InvalidInput,
    JobFailed,
    JobStatus,
    NotFound,
    Retry,
    Step,
    Unauthorized,
    Unreachable,
    WaitTimeout,
)
from shared.schemas import ModelInfo
from tests.integration.conftest import API_KEYS, System, consumer_paused
from worker.sklearn_model import SklearnModel

pytestmark = pytest.mark.integration
ALICE, BOB = API_KEYS


@pytest.fixture(scope="module")
def estimator(model_dir: Path) -> SklearnModel:
    return SklearnModel.load(model_dir / "demo" / "1" / "model.skops")


@pytest.fixture
def mlq(keyed_system: System) -> Client:
    with Client(keyed_system.base_url, api_key=ALICE) as client:
        yield client  # type: ignore[misc]


def test_predict_equals_model_predict(
    mlq: Client, estimator: SklearnModel, diabetes_rows: list[list[float]]
) -> None:
    rows = diabetes_rows[:25]
    accepted = mlq.submit(rows, model="demo:1")
    assert accepted.status == JobStatus.QUEUED and accepted.n_rows == 25
    result = mlq.result(accepted.job_id, wait=20)
    assert result.version == "1"
    assert result.data == pytest.approx(list(estimator.predict(np.asarray(rows))), rel=1e-12)
    job = mlq.get(accepted.job_id)
    assert (job.status, job.kind, job.n_rows) == (JobStatus.SUCCEEDED, "json", 25)
    # A numpy array is accepted as rows too.
    assert mlq.predict(np.asarray(rows[:3])) == pytest.approx(result.data[:3], rel=1e-12)


def test_wait_long_polls_until_the_job_ends(
    mlq: Client, keyed_system: System, diabetes_rows: list[list[float]]
) -> None:
    seen: list[JobStatus] = []
    with consumer_paused(keyed_system):
        accepted = mlq.submit(diabetes_rows[:2])
        with pytest.raises(WaitTimeout) as timed_out:
            mlq.wait(accepted.job_id, timeout=0.5, on_progress=lambda j: seen.append(j.status))
    assert timed_out.value.job.status == JobStatus.QUEUED
    # Once per live event or long poll (a gateway with events may report both).
    assert seen and set(seen) == {JobStatus.QUEUED}
    done = mlq.wait(accepted.job_id, timeout=20)
    assert done.status == JobStatus.SUCCEEDED and done.finished_at is not None


def test_typed_errors_from_the_real_gateway(mlq: Client, keyed_system: System) -> None:
    with pytest.raises(InvalidInput) as bad:
        mlq.submit([[1.0] * 9 + ["x"]])  # type: ignore[list-item]
    # One place (pydantic reports it once per accepted type: float, int).
    assert {(w.row, w.column) for w in bad.value.errors} == {(0, 9)}
    assert bad.value.status == 422 and bad.value.detail.startswith("data: row 0, column 9:")
    with pytest.raises(InvalidInput) as narrow:
        mlq.submit([[1.0] * 10, [1.0, 2.0]])
    assert [w.row for w in narrow.value.errors] == [1]
    assert "row 1 has 2 features, expected 10" in narrow.value.detail
    with pytest.raises(NotFound):
        mlq.get("6f1c1ad5-0b8e-4a59-8a47-3c5ad6d1e000")
    with Client(keyed_system.base_url) as anonymous, pytest.raises(Unauthorized):
        anonymous.models()
    with Client(keyed_system.base_url, api_key="mlq_wrong") as wrong, pytest.raises(Unauthorized):
        wrong.models()


def test_another_keys_job_is_not_found(mlq: Client, keyed_system: System) -> None:
    accepted = mlq.submit([[0.0] * 10])
    with Client(keyed_system.base_url, api_key=BOB) as bob:
        with pytest.raises(NotFound):
            bob.get(accepted.job_id)
        with pytest.raises(NotFound):
            bob.cancel(accepted.job_id)
    assert mlq.wait(accepted.job_id, timeout=20).status == JobStatus.SUCCEEDED


def test_cancel_then_the_result_is_job_failed(
    mlq: Client, keyed_system: System, diabetes_rows: list[list[float]]
) -> None:
    with consumer_paused(keyed_system):
        accepted = mlq.submit(diabetes_rows[:3])
        cancelled = mlq.cancel(accepted.job_id)
    assert cancelled.status == JobStatus.CANCELLED
    with pytest.raises(JobFailed) as failed:
        mlq.result(accepted.job_id, wait=10)
    assert failed.value.job.status == JobStatus.CANCELLED
    with pytest.raises(Conflict):
        mlq.cancel(accepted.job_id)


def test_the_same_idempotency_key_is_accepted_on_a_retry(
    mlq: Client, diabetes_rows: list[list[float]]
) -> None:
    # The header is sent on every submit; gateways that do not know it yet ignore it.
    first = mlq.submit(diabetes_rows[:2], idempotency_key="sdk-test-retry-1")
    again = mlq.submit(diabetes_rows[:2], idempotency_key="sdk-test-retry-1")
    for job in (first, again):
        assert mlq.result(job.job_id, wait=20).data == mlq.result(first.job_id).data


def test_the_job_listing_when_the_gateway_has_it(mlq: Client, keyed_system: System) -> None:
    accepted = mlq.submit([[0.0] * 10])
    auth = {"Authorization": f"Bearer {ALICE}"}
    if httpx.get(f"{keyed_system.base_url}/v1/jobs", headers=auth).status_code == 405:
        # A gateway without GET /v1/jobs (POST /v1/jobs exists, hence 405).
        with pytest.raises(ApiError) as refused:
            mlq.jobs(limit=5)
        assert refused.value.status == 405
        return
    page = mlq.jobs(limit=5)
    assert page.jobs[0].job_id == accepted.job_id
    with Client(keyed_system.base_url, api_key=BOB) as bob:
        assert accepted.job_id not in {job.job_id for job in bob.jobs(limit=100).jobs}


def test_models_are_typed(mlq: Client, demo_info: ModelInfo) -> None:
    models = mlq.models()
    assert models.default == "demo"
    (info,) = models.models
    assert (info.name, info.version, info.feature_names) == ("demo", "1", demo_info.feature_names)
    assert info.metrics == demo_info.metrics


def test_score_csv_streams_both_ways_with_progress(
    mlq: Client,
    demo_info: ModelInfo,
    estimator: SklearnModel,
    diabetes_rows: list[list[float]],
    tmp_path: Path,
) -> None:
    rows = diabetes_rows[:300]
    source = tmp_path / "in.csv"
    with source.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["customer", *demo_info.feature_names])
        writer.writerows([f"c{i}", *row] for i, row in enumerate(rows))
    steps: list[Step] = []
    out = io.BytesIO()
    with source.open("rb") as fh:  # a file object, not only a path
        job = mlq.score_csv(fh, out, id_column="customer", on_progress=steps.append)
    assert job.status == JobStatus.SUCCEEDED and job.n_rows == 300
    table = list(csv.reader(io.StringIO(out.getvalue().decode())))
    assert table[0] == ["customer", "prediction"]
    assert [r[0] for r in table[1:]] == [f"c{i}" for i in range(300)]
    expected = estimator.predict(np.asarray(rows))
    assert [float(r[1]) for r in table[1:]] == pytest.approx(list(expected), rel=1e-12)
    uploads = [s for s in steps if s.stage == "upload"]
    assert uploads[-1].done == uploads[-1].total == source.stat().st_size
    assert [s for s in steps if s.stage == "scoring"][-1].done == 300
    assert sum(1 for s in steps if s.stage == "download") >= 1
    assert [s.stage for s in steps] == sorted(
        (s.stage for s in steps), key=["upload", "scoring", "download"].index
    )


def test_a_bad_csv_line_fails_the_job_with_line_and_column(
    mlq: Client, demo_info: ModelInfo, tmp_path: Path
) -> None:
    source = tmp_path / "bad.csv"
    lines = [",".join(demo_info.feature_names), ",".join(["0.1"] * 10), "0.1,0.2,abc" + ",0" * 7]
    source.write_text("\n".join(lines) + "\n")
    with pytest.raises(JobFailed) as failed:
        mlq.score_csv(source, tmp_path / "out.csv")
    assert "line 3, column 3 (bmi)" in str(failed.value)
    found = mlq.errors(failed.value.job.job_id)
    assert [(e.line, e.column, e.name) for e in found.errors] == [(3, 3, "bmi")]


def test_an_unreachable_gateway_raises_after_the_retries() -> None:
    retry = Retry(attempts=2, backoff=0.01)
    with Client("http://127.0.0.1:9", retry=retry) as nowhere, pytest.raises(Unreachable):
        nowhere.models()


def test_the_async_client_predicts_the_same(
    keyed_system: System, estimator: SklearnModel, diabetes_rows: list[list[float]]
) -> None:
    rows = diabetes_rows[30:40]

    async def run() -> tuple[list[float], list[float]]:
        async with AsyncClient(keyed_system.base_url, api_key=ALICE) as amlq:
            jobs = await asyncio.gather(*(amlq.submit(rows[i : i + 5]) for i in (0, 5)))
            results = await asyncio.gather(*(amlq.result(j.job_id, wait=20) for j in jobs))
            with pytest.raises(NotFound):
                await amlq.get("6f1c1ad5-0b8e-4a59-8a47-3c5ad6d1e000")
            return results[0].data + results[1].data, (await amlq.models()).models[0].metrics

    data, metrics = asyncio.run(run())
    assert data == pytest.approx(list(estimator.predict(np.asarray(rows))), rel=1e-12)
    assert "r2" in metrics
