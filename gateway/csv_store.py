"""The gateway's side of CSV jobs' chunk keys (see `shared.csvjobs`): store, finish, read, purge."""

from __future__ import annotations

import csv
import io
import sys
from array import array
from collections.abc import AsyncIterator
from typing import Any, NamedTuple

import orjson
from redis.asyncio import Redis

from shared import csvjobs, jobstore, redisio
from shared.chunks import Chunk
from shared.csvjobs import ChunkOutcome
from shared.errors import InvalidInput, JobConflict, ServiceError
from shared.features import excerpt
from shared.redisio import text
from shared.replication import ReplicaWait, run_script_async

MAX_ERRORS_LISTED = 1000
"""Most bad lines on one page of `GET /v1/jobs/{id}/errors` (`limit` may ask for fewer)."""
MAX_ERRORS_PAGE_BYTES = 192 * 1024
"""Most bytes of bad lines on one page, whatever their number: the next page goes on from there."""
ENTRY_OVERHEAD = 32
"""Bytes an entry gains in the answer (the null column and name it may lack when stored)."""
MAX_MSG_CHARS = 200
"""An error message as listed (messages quote at most 40 characters of a cell; this bounds the
ones stored before that)."""


class CsvStore:
    """Chunk data of CSV jobs in Redis, on behalf of the upload and the result routes."""

    def __init__(self, redis: Redis, ttl: int, wait: ReplicaWait | None = None) -> None:
        self.redis = redis
        self.ttl = ttl
        self.wait = wait  # Sentinel: a chunk counts as received once a replica has it
        self._store = redis.register_script(csvjobs.STORE_CHUNK)
        self._finalize = redis.register_script(csvjobs.FINALIZE)
        self._cancel = redis.register_script(jobstore.CANCEL)
        self._finish = redis.register_script(jobstore.FINISH)
        self._forget = redis.register_script(csvjobs.FORGET_WAITING)

    async def store(self, job_id: str, chunk: Chunk, task_kwargs: bytes) -> bool:
        """Store a chunk's bytes, and its task's arguments (JSON) in the outbox, while the job
        is live; False once it ended (failed, cancelled)."""
        key, data = csvjobs.chunk_data(job_id, chunk.index, chunk.data)
        await self.redis.set(key, data, ex=self.ttl)  # deleted by STORE_CHUNK if the job ended
        call = csvjobs.store_chunk_call(job_id, chunk.index, len(data), task_kwargs, self.ttl)
        what = f"job {job_id} chunk {chunk.index}"
        reply = await run_script_async(self.redis, self.wait, self._store, call, what)
        return csvjobs.outcome(reply) == "stored"

    async def progress(self, job_id: str) -> tuple[ChunkOutcome, int]:
        """The job's status ("missing" once expired) and how many chunks are scored."""
        status, done = await self.redis.hmget(jobstore.job_key(job_id), ["status", "chunks_done"])
        return csvjobs.outcome(status or "missing"), int(done or 0)

    async def finalize(self, job_id: str, chunks: int, rows: int) -> ChunkOutcome:
        """Record the totals once the upload ended; completes the job if every chunk is scored."""
        call = csvjobs.finalize_call(job_id, chunks=chunks, rows=rows, ttl=self.ttl)
        reply = await run_script_async(self.redis, self.wait, self._finalize, call, f"job {job_id}")
        return csvjobs.outcome(reply)

    async def purge(self, job_id: str) -> None:
        """Delete every chunk key of a job that has ended (call after the status changed)."""
        sent = int(await self.redis.hget(jobstore.job_key(job_id), "chunks_sent") or 0)
        forget = csvjobs.forget_waiting_call(job_id, sent)
        await self._forget(keys=forget.keys, args=forget.args)
        for keys in csvjobs.purge_batches(job_id, sent):
            await self.redis.delete(*keys)

    async def fail(self, job_id: str, error: ServiceError) -> None:
        """Fail a live job for `error` (its record stays, with the error) and delete its chunks."""
        call = jobstore.failure_call(
            job_id, error_type=type(error).__name__, message=error.message, ttl=self.ttl
        )
        await self._finish(keys=call.keys, args=call.args)
        await self.purge(job_id)

    async def abort(self, job_id: str) -> None:
        """Forget a job whose upload failed: its client never learnt the id."""
        call = jobstore.cancel_call(job_id)
        await self._cancel(keys=call.keys, args=call.args)
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
        return chunks, text(id_column)

    async def result_csv(self, job_id: str, chunks: int, id_column: str) -> AsyncIterator[bytes]:
        """The result file, one chunk at a time: memory holds a single chunk whatever the size."""
        yield _header(id_column)
        for i in range(chunks):
            raw, ids = await self.redis.mget(csvjobs.out_key(job_id, i), csvjobs.ids_key(job_id, i))
            if raw is None:  # expired while streaming: the client sees a short body, not a lie
                return
            yield _rows(decode_floats(redisio.raw(raw)), orjson.loads(ids) if ids else None)

    async def errors(
        self, job_id: str, cursor: ErrorCursor, limit: int
    ) -> tuple[list[dict[str, Any]], ErrorCursor | None]:
        """One page of a job's bad lines, in file order: those that failed it, or those skipped
        so far; and where the next page starts (None at the end). A page holds at most `limit`
        lines and about `MAX_ERRORS_PAGE_BYTES`."""
        failed_with, sent = await self.redis.hmget(
            jobstore.job_key(job_id), ["errors", "chunks_sent"]
        )
        page = _Page(limit)
        if failed_with:  # a failed job lists its few bad lines in its record
            listed: list[dict[str, Any]] = orjson.loads(failed_with)
            page.take(ErrorCursor(0, cursor.offset), listed)
            return page.entries, page.next
        chunk, offset = cursor.chunk, cursor.offset
        for i in range(chunk, int(sent or 0)):
            raw = await self.redis.get(csvjobs.err_key(job_id, i))
            if raw and not page.take(ErrorCursor(i, offset), orjson.loads(raw)):
                return page.entries, page.next
            offset = 0
        return page.entries, None


class ErrorCursor(NamedTuple):
    """Where a page of bad lines starts: chunk index, then position in that chunk's list."""

    chunk: int
    offset: int

    @classmethod
    def parse(cls, value: str | None) -> ErrorCursor:
        """A cursor as given by a client (`next_cursor` of the page before); `InvalidInput`
        if it is not one."""
        if not value:
            return cls(0, 0)
        chunk, dot, offset = value.partition(".")
        if not (dot and chunk.isdigit() and offset.isdigit() and len(value) <= 24):
            raise InvalidInput("cursor: not a cursor; pass the next_cursor of the page before")
        return cls(int(chunk), int(offset))

    def __str__(self) -> str:
        return f"{self.chunk}.{self.offset}"


class _Page:
    """Bad lines gathered up to a count and a byte budget."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.entries: list[dict[str, Any]] = []
        self.bytes = 0
        self.next: ErrorCursor | None = None

    def take(self, start: ErrorCursor, listed: list[dict[str, Any]]) -> bool:
        """Add `listed[start.offset:]`; False once the page is full (`next` says where)."""
        for j in range(start.offset, len(listed)):
            entry = {**listed[j], "msg": str(listed[j].get("msg", ""))[:MAX_MSG_CHARS]}
            if isinstance(entry.get("name"), str):
                entry["name"] = excerpt(entry["name"])
            size = len(orjson.dumps(entry)) + ENTRY_OVERHEAD
            if len(self.entries) >= self.limit or self.bytes + size > MAX_ERRORS_PAGE_BYTES:
                self.next = ErrorCursor(start.chunk, j)
                return False
            self.entries.append(entry)
            self.bytes += size
        return True


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
        if not predictions:
            return b""
        # orjson writes the shortest decimal that reads back as the same float, as `repr` does
        # (0.00001 where repr says 1e-05), ten times faster: a million rows cost 0.6 s of the
        # gateway's CPU with `repr`. It writes NaN and infinities as null: those go through repr.
        text = orjson.dumps(predictions.tolist())
        if b"null" not in text:
            return text[1:-1].replace(b",", b"\n") + b"\n"
        return ("\n".join(map(repr, predictions)) + "\n").encode()
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerows(zip(ids, map(repr, predictions), strict=True))
    return out.getvalue().encode()
