"""A per-process cache of loaded models: each version is read (and verified) once per process,
and at most `max_models` versions (and `max_bytes` of artifacts) stay loaded: the least recently
used goes first, so that a worker serving many models does not hold all of them."""

from __future__ import annotations

import gc
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from shared import tracing
from shared.model import Model
from shared.registry import Pinned, Registry
from shared.schemas import ModelInfo
from worker import metrics
from worker.sklearn_model import SklearnModel

log = logging.getLogger(__name__)
Loader = Callable[[bytes], Model]


@dataclass(frozen=True)
class _Loaded:
    model: Model
    size: int  # the artifact's bytes: a rough, cheap stand-in for the memory it takes


class ModelCache:
    """Resolves model names to loaded models, loading each version on first use only and
    keeping the `max_models` most recently used (0: no limit), within `max_bytes` (0: none)."""

    def __init__(
        self,
        registry: Registry,
        loader: Loader = SklearnModel.from_bytes,
        max_models: int = 0,
        max_bytes: int = 0,
    ) -> None:
        self.registry = registry
        self._loader = loader
        self.max_models = max_models
        self.max_bytes = max_bytes
        self._models: OrderedDict[tuple[str, str], _Loaded] = OrderedDict()

    def get(self, spec: str, key: str = "") -> tuple[ModelInfo, Model]:
        """The manifest and loaded model for `spec` (for the job with id `key`: an alias may
        split traffic by it); a newly trained version is picked up."""
        pinned, model = self.pin(spec, key)
        return pinned.info, model

    def pin(self, spec: str, key: str = "") -> tuple[Pinned, Model]:
        """`get`, with the shadow version of the spec's alias (if any) beside the answer's."""
        pinned = self.registry.pin(spec, key)
        return pinned, self.load(pinned.info)

    def load(self, info: ModelInfo) -> Model:
        """The loaded model of one version: from the cache, or loaded now (evicting others)."""
        key = (info.name, info.version)
        loaded = self._models.get(key)
        if loaded is not None:
            self._models.move_to_end(key)
            return loaded.model
        loaded = self._models[key] = self._load(info)
        self._evict()
        return loaded.model

    @property
    def loaded(self) -> list[tuple[str, str]]:
        """The loaded versions, least recently used first."""
        return list(self._models)

    def _evict(self) -> None:
        # The newest stays even when it alone is over the byte budget: a job needs it.
        evicted = False
        while len(self._models) > 1 and (
            (self.max_models and len(self._models) > self.max_models)
            or (self.max_bytes and sum(m.size for m in self._models.values()) > self.max_bytes)
        ):
            (name, version), _ = self._models.popitem(last=False)
            metrics.observe_model_eviction(name, version)
            log.info("model evicted", extra={"model": name, "version": version})
            evicted = True
        if evicted:
            gc.collect()  # estimators may hold reference cycles: give their memory back now
        metrics.set_models_loaded(len(self._models))

    def _load(self, info: ModelInfo) -> _Loaded:
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
        return _Loaded(model, len(data))
