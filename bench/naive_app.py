"""Naive Celery as a baseline: one task per job, rows as JSON, plain `model.predict`.

MLQUEUE_BENCH_MODEL=... MLQUEUE_BENCH_REDIS=... celery -A bench.naive_app worker -Q naive
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
from celery import Celery, signals

from worker.sklearn_model import SklearnModel

url = os.environ["MLQUEUE_BENCH_REDIS"]
app = Celery("naive", broker=url, backend=url)
app.conf.update(
    task_serializer="json",
    accept_content=["json"],
    result_serializer="json",
    task_default_queue="naive",
    worker_hijack_root_logger=False,
)
model: Any = None


@signals.worker_process_init.connect
def _load(**_: Any) -> None:
    global model
    # The plain estimator (scikit-learn's own `predict`), from the demo's skops file.
    model = SklearnModel.load(Path(os.environ["MLQUEUE_BENCH_MODEL"]), fast=False).estimator


@app.task(name="bench.naive_predict")
def naive_predict(rows: list[list[float]]) -> list[float]:
    global model
    if model is None:
        _load()
    return list(model.predict(np.asarray(rows)).tolist())
