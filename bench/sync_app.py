"""The article's synchronous service, as a baseline: a `def` endpoint calling `model.predict`.

MLQUEUE_BENCH_MODEL=models/demo/1/model.skops uvicorn bench.sync_app:app
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from fastapi import Depends, FastAPI
from pydantic import BaseModel

from worker.sklearn_model import SklearnModel

# The plain estimator (scikit-learn's own `predict`), read from the skops file the demo has.
model = SklearnModel.load(Path(os.environ["MLQUEUE_BENCH_MODEL"]), fast=False).estimator
app = FastAPI()


class PredictRequest(BaseModel):
    data: list[list[float]]


class PredictResponse(BaseModel):
    data: list[float]


def get_model() -> object:
    return model


@app.post("/predict")
def predict(body: PredictRequest, m: object = Depends(get_model)) -> PredictResponse:
    return PredictResponse(data=m.predict(np.asarray(body.data)).tolist())  # type: ignore[attr-defined]
