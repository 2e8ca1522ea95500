"""The article's synchronous service, as a baseline: a `def` endpoint calling `model.predict`.

MLQUEUE_BENCH_MODEL=models/demo/1/model.joblib uvicorn bench.sync_app:app
"""

from __future__ import annotations

import os

import joblib
import numpy as np
from fastapi import Depends, FastAPI
from pydantic import BaseModel

model = joblib.load(os.environ["MLQUEUE_BENCH_MODEL"])
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
