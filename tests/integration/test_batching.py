"""Correctness under micro-batching, on the real system: many small concurrent jobs."""

from __future__ import annotations

import asyncio
import json
import random
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.integration.conftest import System
from worker.sklearn_model import SklearnModel

pytestmark = pytest.mark.integration


async def one_job(client: httpx.AsyncClient, rows: list[list[float]]) -> list[float]:
    submitted = await client.post("/v1/jobs", json={"data": rows})
    assert submitted.status_code == 202, submitted.text
    result = await client.get(f"{submitted.headers['location']}/result", params={"wait": 20})
    assert result.status_code == 200, result.text
    return list(result.json()["data"])


async def many_jobs(base_url: str, jobs: list[list[list[float]]]) -> list[list[float]]:
    limits = httpx.Limits(max_connections=64)
    async with httpx.AsyncClient(base_url=base_url, timeout=30, limits=limits) as client:
        return await asyncio.gather(*(one_job(client, rows) for rows in jobs))


def test_every_concurrent_job_gets_exactly_its_own_predictions(
    system: System, model_dir: Path, diabetes_rows: list[list[float]]
) -> None:
    rng = random.Random(7)
    jobs = [rng.sample(diabetes_rows, rng.randint(1, 10)) for _ in range(300)]
    results = asyncio.run(many_jobs(system.base_url, jobs))
    estimator = SklearnModel.load(model_dir / "demo" / "1" / "model.skops", fast=False).estimator
    for rows, predictions in zip(jobs, results, strict=True):
        assert predictions == estimator.predict(np.asarray(rows)).tolist()
    batches = [json.loads(line) for line in system.worker_log.read_text().splitlines()
               if '"batch done"' in line]  # fmt: skip
    # The jobs really were coalesced: some messages carried several jobs.
    assert sum(b["jobs"] for b in batches) >= 300
    assert max(b["jobs"] for b in batches) > 1
