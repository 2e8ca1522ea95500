"""Model uploads: stream the file into Redis, have a worker vet and install it, answer with its
manifest (`shared.model_uploads` holds the contract with the worker).

The gateway needs no ML library: it only sniffs the format from the first bytes (a skops file is
a zip archive), so that a pickle is refused before it is stored, and bounds the size. Everything
that needs the model loaded (trusted types, `n_features`, the smoke prediction, the manifest) is
the worker's, and the worker renames the version into the registry: gateways only read it.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator

import orjson
from python_multipart.multipart import parse_options_header
from redis.asyncio import Redis
from starlette.exceptions import HTTPException

from gateway.form import FileData, FormReader
from gateway.limits import BodyTooLarge
from gateway.publisher import Publisher
from shared import model_uploads as uploads
from shared.errors import (
    InvalidInput,
    ModelError,
    ModelRejected,
    QueueUnavailable,
    ServiceError,
    UnsupportedModelFormat,
)
from shared.registry import Registry, is_valid_name
from shared.schemas import ModelInfo
from shared.settings import Settings
from shared.tasks import QUEUE_HIGH, VERIFY_MODEL, VerifyModelKwargs

log = logging.getLogger(__name__)
STAGE_BLOCK = 1024 * 1024  # bytes appended to Redis at a time
POLL_SECONDS = 0.1
# Errors a worker may report, by name; any other is the worker's trouble: a 503.
REPORTED: dict[str, type[ServiceError]] = {
    "ModelRejected": ModelRejected,
    "UnsupportedModelFormat": UnsupportedModelFormat,
}


class ModelUploads:
    """Uploads new versions of models on behalf of an admin."""

    def __init__(
        self,
        settings: Settings,
        registry: Registry,
        redis: Redis,
        publisher: Publisher,
        wait_seconds: float,
    ) -> None:
        self.settings = settings
        self.registry = registry
        self.redis = redis
        self.publisher = publisher
        self.wait_seconds = wait_seconds

    async def upload(self, name: str, content_type: str, body: AsyncIterator[bytes]) -> ModelInfo:
        """Install the file in the form's `file` field as the next version of `name`; its
        manifest once a worker has vetted it, smoke-tested it and made it visible."""
        if not is_valid_name(name):
            raise InvalidInput(
                f"invalid model name {name!r}: letters, digits, '_', '-' and '.' (not first)"
            )
        _check_multipart(content_type)
        upload_id = str(uuid.uuid4())
        try:
            fmt = await self._stage(upload_id, content_type, body)
            kwargs: VerifyModelKwargs = {"upload_id": upload_id, "name": name, "format": fmt}
            await self.publisher.send(
                VERIFY_MODEL, upload_id, kwargs, f"<model {name}>", QUEUE_HIGH
            )
        except BaseException:
            await asyncio.shield(self.redis.delete(uploads.data_key(upload_id)))
            raise
        return await self._outcome(upload_id)

    async def _stage(self, upload_id: str, content_type: str, body: AsyncIterator[bytes]) -> str:
        """Append the file's bytes to Redis; its format, sniffed from the first bytes."""
        form = FormReader(content_type, "file", ())
        key, ttl = uploads.data_key(upload_id), self.settings.sync_timeout + uploads.OUTCOME_TTL
        pending, size, fmt = bytearray(), 0, None
        async for block in body:
            for event in form.feed(block):
                if not isinstance(event, FileData):
                    continue
                pending += event.data
                size += len(event.data)
                if size > self.settings.max_model_bytes:
                    raise BodyTooLarge(self.settings.max_model_bytes)
                if fmt is None and len(pending) >= 8:
                    fmt = self._format(bytes(pending[:8]))
                if len(pending) >= STAGE_BLOCK and fmt is not None:
                    await self._append(key, bytes(pending), ttl)
                    pending.clear()
        try:
            form.finish()
        except InvalidInput:
            raise InvalidInput(
                "no complete file in the form: send the model as field `file`"
            ) from None
        if not size:
            raise UnsupportedModelFormat("the file is empty")
        fmt = fmt or self._format(bytes(pending))
        await self._append(key, bytes(pending), ttl)
        return fmt

    def _format(self, head: bytes) -> str:
        fmt = uploads.sniff(head)
        if fmt is None:
            raise UnsupportedModelFormat(
                "the file is not a skops file (skops.io.dump writes a zip archive)"
            )
        if fmt == "pickle" and not self.settings.allow_pickle_uploads:
            raise UnsupportedModelFormat(
                "joblib/pickle uploads are refused (loading one runs code); save the model with "
                "skops.io.dump, or set MLQUEUE_ALLOW_PICKLE_UPLOADS=true"
            )
        return fmt

    async def _append(self, key: str, data: bytes, ttl: float) -> None:
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.append(key, data)
            pipe.expire(key, int(ttl) + 1)
            await pipe.execute()

    async def _outcome(self, upload_id: str) -> ModelInfo:
        """Poll the worker's outcome (an upload is rare: a poll every 0.1 s costs nothing)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.wait_seconds
        key = uploads.outcome_key(upload_id)
        while loop.time() < deadline:
            found = await self.redis.getdel(key)
            if found is not None:
                # This process serves the new version at once; others within their cache's 1 s.
                self.registry.forget()
                return _answer(orjson.loads(found))
            await asyncio.sleep(POLL_SECONDS)
        await self.redis.delete(uploads.data_key(upload_id))  # a worker taking it later: nothing
        raise QueueUnavailable(
            f"no worker vetted the model within {self.wait_seconds:g} s; see GET /v1/models "
            "before uploading it again",
            upload_id=upload_id,
        )


def _check_multipart(content_type: str) -> None:
    kind, params = parse_options_header(content_type)
    if kind != b"multipart/form-data" or not params.get(b"boundary"):
        raise HTTPException(415, "expected multipart/form-data with the model file in field `file`")


def _answer(outcome: uploads.Outcome) -> ModelInfo:
    if "manifest" in outcome:
        return ModelInfo.model_validate(outcome["manifest"])
    error = outcome.get("error") or {"type": "ModelError", "message": "no outcome"}
    raise REPORTED.get(error["type"], ModelError)(error["message"])
