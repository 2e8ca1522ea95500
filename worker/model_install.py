"""Vet an uploaded model file and install it as the next version of its model.

Nothing of the file is trusted before it passes: a skops file is loaded with the trusted types
only (`worker.skops_format`), a pickle only when `allow_pickle_uploads` is on. The server writes
the manifest itself from the loaded estimator, predicts two rows as a smoke test, and only then
renames the version's folder into the registry: a version is visible whole or not at all.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import shutil
import tempfile
import warnings
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import orjson
import sklearn
from redis import Redis

from shared import model_uploads as uploads
from shared.errors import ModelNotFound, ModelRejected, ServiceError, UnsupportedModelFormat
from shared.registry import MANIFEST, Registry, is_valid_name
from shared.schemas import ModelInfo
from shared.settings import Settings
from worker import skops_format
from worker.sklearn_model import SklearnModel

log = logging.getLogger(__name__)
ARTIFACTS = {"skops": "model.skops", "pickle": "model.joblib"}
RENAME_ATTEMPTS = 10  # concurrent uploads of one name each take the next free number


def verify_upload(
    settings: Settings, redis: Redis, registry: Registry, upload_id: str, name: str, fmt: str
) -> uploads.Outcome | None:
    """Take upload `upload_id` from Redis, install it, leave the outcome for the gateway;
    None when its bytes are gone (a redelivered message, or an upload the gateway gave up)."""
    data = redis.getdel(uploads.data_key(upload_id))
    if not isinstance(data, bytes):  # None: gone
        log.warning("model upload gone before it was verified", extra={"upload_id": upload_id})
        return None
    outcome: uploads.Outcome
    try:
        info = install(settings, registry, name, fmt, data)
        outcome = {"manifest": info.model_dump(mode="json")}
        log.info("model uploaded", extra={"model": info.name, "version": info.version})
    except ServiceError as exc:
        outcome = {"error": {"type": type(exc).__name__, "message": exc.message}}
        log.warning("model upload refused: %s", exc.message, extra={"model": name})
    except Exception as exc:  # a soft time limit, a full disk: answer now, not at the timeout
        message = f"the worker could not vet the model: {type(exc).__name__}: {exc}"[:500]
        outcome = {"error": {"type": "ModelError", "message": message}}
        log.exception("model upload failed", extra={"model": name})
    redis.set(uploads.outcome_key(upload_id), orjson.dumps(outcome), ex=uploads.OUTCOME_TTL)
    return outcome


def install(settings: Settings, registry: Registry, name: str, fmt: str, data: bytes) -> ModelInfo:
    """Vet `data` as a new version of `name` and rename it into the registry; its manifest."""
    if not is_valid_name(name):
        raise ModelRejected(f"invalid model name {name!r}")
    estimator = _load(settings, fmt, data)
    n_features = _n_features(estimator)
    previous = _latest(registry, name)
    if previous is not None and previous.n_features != n_features:
        raise ModelRejected(
            f"the uploaded model takes {n_features} features; {name}:{previous.version} takes "
            f"{previous.n_features} (a new version must take the same features)"
        )
    _smoke_test(SklearnModel(estimator, fast=settings.fast_predict), n_features)
    info = ModelInfo(
        name=name,
        version="0",  # the number is taken at the rename
        created_at=datetime.now(UTC),
        feature_names=_feature_names(estimator, n_features, previous),
        n_features=n_features,
        framework_version=sklearn.__version__,
        estimator=type(estimator).__name__,
        metrics={},
        sha256=hashlib.sha256(data).hexdigest(),
        artifact=ARTIFACTS[fmt],
    )
    return _write(registry, info, data)


def _load(settings: Settings, fmt: str, data: bytes) -> Any:
    if fmt not in uploads.FORMATS or uploads.sniff(data[:8]) != fmt:
        raise UnsupportedModelFormat("the file is neither a skops file nor a joblib/pickle file")
    if fmt == "skops":
        return skops_format.load(data)
    if not settings.allow_pickle_uploads:
        raise UnsupportedModelFormat(
            "joblib/pickle uploads are refused (loading one runs code); save the model with "
            "skops.io.dump, or set MLQUEUE_ALLOW_PICKLE_UPLOADS=true"
        )
    try:
        return joblib.load(io.BytesIO(data))
    except Exception as exc:  # a broken pickle may raise anything
        raise ModelRejected(f"the pickle cannot be loaded: {type(exc).__name__}: {exc}") from exc


def _n_features(estimator: Any) -> int:
    n = getattr(estimator, "n_features_in_", None)
    if not callable(getattr(estimator, "predict", None)) or not isinstance(n, int) or n < 1:
        raise ModelRejected(
            f"the file holds a {type(estimator).__name__}, not a fitted estimator with "
            "`predict` and `n_features_in_`"
        )
    return n


def _latest(registry: Registry, name: str) -> ModelInfo | None:
    try:
        return registry.resolve(name)
    except ModelNotFound:
        return None


def _smoke_test(model: SklearnModel, n_features: int) -> None:
    """Predict a row of zeros and a row of ones: one finite number each, or the upload fails."""
    X = np.vstack([np.zeros(n_features), np.ones(n_features)])
    try:
        with warnings.catch_warnings():  # e.g. "X does not have valid feature names"
            warnings.simplefilter("ignore")
            predicted = np.asarray(model.predict(X), dtype=np.float64)
    except Exception as exc:  # whatever the model raises, the upload is refused with it
        raise ModelRejected(
            f"the smoke prediction failed: {type(exc).__name__}: {exc}"[:500]
        ) from exc
    if predicted.shape != (2,) or not np.isfinite(predicted).all():
        raise ModelRejected(
            f"the smoke prediction gave {predicted.tolist()!r}, not one finite number per row"[:500]
        )


def _feature_names(estimator: Any, n_features: int, previous: ModelInfo | None) -> list[str]:
    names = getattr(estimator, "feature_names_in_", None)
    if names is not None and len(names) == n_features:
        return [str(n) for n in names]
    if previous is not None:  # same count, checked before
        return list(previous.feature_names)
    return [f"f{i}" for i in range(n_features)]


def _write(registry: Registry, info: ModelInfo, data: bytes) -> ModelInfo:
    """Write artifact and manifest into a scratch folder, then rename it to the next version."""
    parent = registry.root / info.name
    parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(dir=parent, prefix=".tmp-"))
    try:
        scratch.chmod(0o755)  # mkdtemp makes it private; the gateways read it too
        (scratch / info.artifact).write_bytes(data)
        for _ in range(RENAME_ATTEMPTS):
            info = info.model_copy(update={"version": registry.next_version(info.name)})
            (scratch / MANIFEST).write_bytes(orjson.dumps(info.model_dump(mode="json")))
            try:
                os.rename(scratch, parent / info.version)  # atomic, and never over a version
                return info
            except OSError:  # another upload took this number first
                continue
        raise ModelRejected(f"no free version number for {info.name} after {RENAME_ATTEMPTS} tries")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
