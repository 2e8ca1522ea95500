"""A per-process cache of loaded models: each version is read (and verified) once per process."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from shared import tracing
from shared.model import Model
from shared.registry import Registry
from shared.schemas import ModelInfo
from worker import metrics
from worker.sklearn_model import SklearnModel

log = logging.getLogger(__name__)
Loader = Callable[[bytes], Model]


class ModelCache:
    """Resolves model names to loaded models, loading each version on first use only."""

    def __init__(self, registry: Registry, loader: Loader = SklearnModel.from_bytes) -> None:
        self.registry = registry
        self._loader = loader
        self._models: dict[tuple[str, str], Model] = {}

    def get(self, spec: str) -> tuple[ModelInfo, Model]:
        """The manifest and loaded model for `spec`; a newly trained version is picked up."""
        info = self.registry.resolve(spec)
        key = (info.name, info.version)
        model = self._models.get(key)
        if model is None:
            model = self._models[key] = self._load(info)
        return info, model

    def _load(self, info: ModelInfo) -> Model:
        # Raises ModelError unless the sha256 matches; the model is loaded from the very bytes
        # that were hashed, so swapping the file after the check changes nothing.
        data = self.registry.read_artifact(info)
        started = time.perf_counter()
        attributes = {tracing.MODEL: info.name, tracing.VERSION: info.version}
        with tracing.span("mlqueue.model_load", attributes):
            model = self._loader(data)
        seconds = time.perf_counter() - started
        metrics.observe_model_load(info.name, info.version, seconds)
        log.info(
            "model loaded",
            extra={
                "model": info.name,
                "version": info.version,
                "duration_ms": round(1000 * seconds, 1),
            },
        )
        return model
