"""The gateway's side of CSV jobs' chunk keys (see `shared.csvjobs`): store, finish, read, purge."""

from __future__ import annotations

import csv
import io
import sys
import time
from array import array
from collections.abc import AsyncIterator
from typing import Any

import orjson
from redis.asyncio import Redis

from shared import csvjobs, jobstore
from shared.chunks import Chunk
from shared.errors import JobConflict
from shared.tasks import ScoreChunkKwargs

PURGE_BATCH = 500
MAX_ERRORS_LISTED = 1000


class CsvStore:
    """Chunk data of CSV jobs in Redis, on behalf of the upload and the result routes."""

    def __init__(self, redis: Redis, ttl: int) -> None:
        self.redis = redis
        self.ttl = ttl
        self._store = redis.register_script(csvjobs.STORE_CHUNK)
        self._finalize = redis.register_script(csvjobs.FINALIZE)
        self._cancel = redis.register_script(jobstore.CANCEL)

    async def store(self, job_id: str, chunk: Chunk, task_kwargs: ScoreChunkKwargs) -> bool:
        """Store a chunk's bytes, and its task's arguments in the outbox, while the job is live;
        False once it ended (failed, cancelled)."""
        keys = [
            jobstore.job_key(job_id),
            csvjobs.in_key(job_id, chunk.index),
            csvjobs.msg_key(job_id, chunk.index),
            csvjobs.PENDING_CHUNKS,
        ]
        member = csvjobs.pending_member(job_id, chunk.index)
        args: list[bytes | str | int | float] = [
            chunk.data,
            self.ttl,
            orjson.dumps(task_kwargs),
            member,
            time.time(),
        ]
        stored = await self._store(keys=keys, args=args)
        return bool(stored == 1)

    async def progress(self, job_id: str) -> tuple[str, int]:
        """The job's status and how many chunks are scored."""
        status, done = await self.redis.hmget(jobstore.job_key(job_id), ["status", "chunks_done"])
        return _text(status) or "missing", int(done or 0)

    async def finalize(self, job_id: str, chunks: int, rows: int) -> str:
        """Record the totals once the upload ended; completes the job if every chunk is scored."""
        args: list[str | int] = [
            chunks,
            rows,
            repr(time.time()),
            jobstore.EVENTS,
            jobstore.job_key(""),
        ]
        return _text(await self._finalize(keys=[jobstore.job_key(job_id)], args=args))

    async def purge(self, job_id: str) -> None:
        """Delete every chunk key of a job that has ended (call after the status changed)."""
        sent = await self.redis.hget(jobstore.job_key(job_id), "chunks_sent")
        keys = csvjobs.chunk_keys(job_id, int(sent or 0))
        for i in range(0, len(keys), PURGE_BATCH):
            await self.redis.delete(*keys[i : i + PURGE_BATCH])

    async def abort(self, job_id: str) -> None:
        """Forget a job whose upload failed: its client never learnt the id."""
        await self._cancel(keys=[jobstore.job_key(job_id)], args=jobstore.cancel_args())
        await self.purge(job_id)
        await self.redis.delete(jobstore.job_key(job_id))

    async def result_info(self, job_id: str) -> tuple[int, str]:
        """(chunks, id column name or "") of a succeeded job; `JobConflict` if its data expired."""
        total, id_column = await self.redis.hmget(
            jobstore.job_key(job_id), ["chunks_total", "id_column"]
        )
        chunks = int(total or 0)
        keys = [csvjobs.out_key(job_id, i) for i in range(chunks)]
        if keys and await self.redis.exists(*keys) != chunks:
            raise JobConflict(f"job {job_id}: its predictions have expired", job_id=job_id)
        return chunks, _text(id_column)

    async def result_csv(self, job_id: str, chunks: int, id_column: str) -> AsyncIterator[bytes]:
        """The result file, one chunk at a time: memory holds a single chunk whatever the size."""
        yield _header(id_column)
        for i in range(chunks):
            raw, ids = await self.redis.mget(csvjobs.out_key(job_id, i), csvjobs.ids_key(job_id, i))
            if raw is None:  # expired while streaming: the client sees a short body, not a lie
                return
            yield _rows(decode_floats(_bytes(raw)), orjson.loads(ids) if ids else None)

    async def errors(self, job_id: str, chunks: int) -> list[Any]:
        """The lines skipped so far, in file order (at most `MAX_ERRORS_LISTED`)."""
        listed: list[Any] = []
        for i in range(chunks):
            raw = await self.redis.get(csvjobs.err_key(job_id, i))
            listed += orjson.loads(raw) if raw else []
            if len(listed) >= MAX_ERRORS_LISTED:
                break
        return listed[:MAX_ERRORS_LISTED]


def decode_floats(raw: bytes) -> array[float]:
    """Little-endian float64 bytes as floats, without numpy."""
    values = array("d")
    values.frombytes(raw)
    if sys.byteorder == "big":
        values.byteswap()
    return values


def _header(id_column: str) -> bytes:
    if not id_column:
        return b"prediction\n"
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerow([id_column, "prediction"])
    return out.getvalue().encode()


def _rows(predictions: array[float], ids: list[str] | None) -> bytes:
    if ids is None:
        text = "\n".join(map(repr, predictions))
        return (text + "\n").encode() if text else b""
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerows(zip(ids, map(repr, predictions), strict=True))
    return out.getvalue().encode()


def _bytes(value: bytes | str) -> bytes:
    return value if isinstance(value, bytes) else value.encode()


def _text(value: bytes | str | None) -> str:
    return value.decode() if isinstance(value, bytes) else (value or "")
