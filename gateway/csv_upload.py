"""Stream a multipart CSV upload into stored, enqueued chunks: one chunk in memory, none on disk.

The body is read block by block and fed to a form reader (`gateway.form`). The file's first
record decides the layout (a header error is a 422 before any job exists); then each chunk is
stored in Redis and its task sent as soon as it is cut, so workers score while the upload goes
on. If the upload fails half-way (413, bad line, client gone), the job and its chunks are
deleted: the client never received its id.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import hashlib
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping

import orjson
from pydantic import ValidationError

from gateway import metrics, traces
from gateway.callbacks import webhook_fields
from gateway.csv_store import CsvStore
from gateway.form import FileData, FileEnd, FileStart, FormEvent, FormReader
from gateway.idempotency import fingerprint
from gateway.publisher import Publisher
from gateway.quotas import Quotas
from gateway.store import JobStore
from shared import csvjobs, jobstore, tracing
from shared.chunks import BOM, Chunk, Chunker, split_first
from shared.csvformat import Layout, check_text, layout_for
from shared.errors import InvalidInput, JobConflict, UploadStalled
from shared.features import excerpt
from shared.registry import Registry
from shared.schemas import CsvOptions, JobAccepted, JobStatus, ModelInfo
from shared.settings import Settings
from shared.tasks import SCORE_CHUNK, queue_for

log = logging.getLogger(__name__)


class CsvUpload:
    """One upload: options, header, job record, then chunks as they are cut."""

    def __init__(
        self,
        settings: Settings,
        registry: Registry,
        jobs: JobStore,
        chunks: CsvStore,
        publisher: Publisher,
        quotas: Quotas,
        owner: str,
        query: Mapping[str, str],
        before_chunk: Callable[[int], Awaitable[None]] | None = None,
        fingerprinted: bool = False,
    ) -> None:
        self.settings, self.registry, self.jobs, self.chunks = settings, registry, jobs, chunks
        self.publisher = publisher
        self.quotas = quotas  # the global cap on waiting chunk bytes, the owner's stored bytes
        self.owner = owner
        self.query = query  # options given as query parameters; form fields override them
        # Awaited with each chunk's rows before it is stored (rate limit, idempotency claim).
        self.before_chunk = before_chunk
        # The file's sha256, what makes a retry "the same", for an Idempotency-Key only: hashing
        # cost a quarter of the gateway's CPU per uploaded byte.
        self.digest = hashlib.sha256() if fingerprinted else None
        self.job_id = ""
        self._new_id = str(uuid.uuid4())  # known before the model resolves: a canary keys on it
        self.stopped = False  # the job ended during the upload: read on, store nothing
        self._head = b""
        self._chunker: Chunker | None = None
        self._done_seen = 0
        self._started = 0.0
        self._webhook: dict[str, str] = {}
        self.options: CsvOptions
        self.info: ModelInfo
        self.layout: Layout

    async def run(self, content_type: str, body: AsyncIterator[bytes]) -> JobAccepted:
        """Read the whole body; returns the accepted job (or raises, leaving nothing behind)."""
        form = FormReader(content_type, "file", CsvOptions.model_fields)
        self._started = time.perf_counter()
        try:
            async for block in idle_bounded(body, self.settings.upload_idle_timeout):
                for event in form.feed(block):
                    await self._on(event)
            form.finish()
            return await self._finish()
        except UploadStalled as exc:
            if self.job_id:  # keep the record, failed, so the logs and the id tell what happened
                exc.details["job_id"] = self.job_id
                with contextlib.suppress(Exception):
                    await asyncio.shield(self.chunks.fail(self.job_id, exc))
            log.warning("csv upload stalled", extra={"job_id": self.job_id or None})
            raise
        except BaseException:
            if self.job_id:
                with contextlib.suppress(Exception):
                    await asyncio.shield(self.chunks.abort(self.job_id))
            raise

    async def _on(self, event: FormEvent) -> None:
        match event:
            case FileStart(fields):
                self._resolve_options(fields)
                self._webhook = await webhook_fields(self.settings, self.options.callback_url)
            case FileData(data) if self._chunker is not None:
                if self.digest is not None:
                    self.digest.update(data)
                for chunk in self._chunker.feed(data):
                    await self._send(chunk)
            case FileData(data):
                if self.digest is not None:
                    self.digest.update(data)
                self._head += data
                await self._start(final=False)
            case FileEnd():
                await self._file_end()

    def _resolve_options(self, fields: Mapping[str, str]) -> None:
        """Options are complete when the file part starts: check them before reading it."""
        self.options = options_of(self.query, fields)
        self.info = self.registry.resolve(self.options.model, self._new_id)

    def fingerprint(self) -> str:
        """The upload's identity for Idempotency-Key: the file's sha256 and the options."""
        if self.digest is None:
            raise RuntimeError("the upload was not fingerprinted: it has no Idempotency-Key")
        return _fingerprint(self.digest.digest(), self.options)

    async def _file_end(self) -> None:
        if self._chunker is None and not await self._start(final=True):
            raise InvalidInput("the file is empty: expected a CSV with one row per sample")
        assert self._chunker is not None
        for chunk in self._chunker.finish():
            await self._send(chunk)

    async def _start(self, final: bool) -> bool:
        """Once the first record is complete: check text, read the layout, create the job."""
        head = self._head.removeprefix(BOM)
        check_text(head, final)
        found = split_first(head, final)
        if found is None:
            return False
        line, start, end = found
        layout = self._layout(head[start:end])
        await self._create(layout)
        newlines = head.count(b"\n", start, end)
        self._chunker = Chunker(
            self.settings.csv_chunk_rows, line + newlines if layout.has_header else line
        )
        self._head = b""
        rest = head[end:] if layout.has_header else head[start:]
        for chunk in self._chunker.feed(rest):
            await self._send(chunk)
        return True

    def _layout(self, record: bytes) -> Layout:
        try:
            text = record.decode("utf-8").removesuffix("\n").removesuffix("\r")
        except UnicodeDecodeError as exc:
            raise InvalidInput("line 1: not UTF-8 text; upload a CSV file") from exc
        cells = next(csv.reader([text]), [])
        options = self.options
        return layout_for(cells, self.info.feature_names, options.id_column, options.ignore_extra)

    async def _create(self, layout: Layout) -> None:
        self.layout = layout
        self.job_id = self._new_id
        record = jobstore.new_record(
            self.job_id, kind="csv", model=self.info.name, n_rows=None, owner=self.owner
        )
        if self.options.priority != "normal":
            record["priority"] = self.options.priority
        record.update(self._webhook)
        record.update(
            version=self.info.version,
            chunks_done="0",
            chunks_sent="0",
            rows_done="0",
            rows_skipped="0",
            on_error=self.options.on_error,
            id_column=self.options.id_column or "",
        )
        await self.jobs.create_many([record])
        if tracing.ON:
            tracing.set_attributes(traces.job_attributes(self.job_id, "csv", self.info))

    async def _send(self, chunk: Chunk) -> None:
        await self._wait_for_room(chunk.index)
        if not self.stopped:
            await self.quotas.check_waiting_chunks(len(chunk.data))
            await self.quotas.add_results(self.owner, chunk.rows)
        if self.before_chunk is not None:
            await self.before_chunk(chunk.rows)
        kwargs = csvjobs.task_kwargs(
            self.job_id,
            chunk.index,
            chunk.first_line,
            chunk.rows,
            f"{self.info.name}:{self.info.version}",
            self.layout,
            self.options.on_error,
        )
        if tracing.ON:  # the job's submit span, for the worker's queue wait (and a resent chunk)
            kwargs["trace"] = tracing.carrier()
        if self.stopped or not await self.chunks.store(self.job_id, chunk, orjson.dumps(kwargs)):
            self.stopped = True
            return
        message_id = f"{self.job_id}.{chunk.index}"
        queue = queue_for(self.options.priority)
        await self.publisher.send(SCORE_CHUNK, message_id, kwargs, f"<chunk {message_id}>", queue)

    async def _wait_for_room(self, index: int) -> None:
        """Hold the upload while too many chunks wait to be scored (bounds Redis memory)."""
        while not self.stopped and index - self._done_seen >= self.settings.csv_max_pending_chunks:
            status, self._done_seen = await self.chunks.progress(self.job_id)
            if status not in (JobStatus.QUEUED, JobStatus.RUNNING):
                self.stopped = True
            elif index - self._done_seen >= self.settings.csv_max_pending_chunks:
                await asyncio.sleep(0.05)

    async def _finish(self) -> JobAccepted:
        assert self._chunker is not None
        if self._chunker.rows_total == 0:
            raise InvalidInput("the file has a header but no data lines")
        status = await self.chunks.finalize(
            self.job_id, self._chunker.chunks_total, self._chunker.rows_total
        )
        if not isinstance(status, JobStatus):
            raise JobConflict(f"job {self.job_id} expired during the upload", job_id=self.job_id)
        metrics.job_submitted(self.info.name, "csv", self._chunker.rows_total)
        log.info(
            "csv upload accepted",
            extra={
                "job_id": self.job_id,
                "model": self.info.name,
                "version": self.info.version,
                "rows": self._chunker.rows_total,
                "chunks": self._chunker.chunks_total,
                "status": status,
                "duration_ms": round(1000 * (time.perf_counter() - self._started), 1),
            },
        )
        return JobAccepted(
            job_id=self.job_id,
            status=status,
            model=self.info.name,
            n_rows=self._chunker.rows_total,
            location=f"/v1/jobs/{self.job_id}",
        )


def options_of(query: Mapping[str, str], fields: Mapping[str, str]) -> CsvOptions:
    """The upload's options: form fields over query parameters; `InvalidInput` naming a bad one."""
    given = {k: v for k, v in {**query, **fields}.items() if v != ""}
    try:
        return CsvOptions.model_validate(given)
    except ValidationError as exc:
        error = exc.errors()[0]
        where = ".".join(map(str, error["loc"]))
        got = excerpt(str(error["input"]))
        raise InvalidInput(f"{where}: {error['msg']} (got {got!r})") from exc


async def fingerprint_upload(
    content_type: str, body: AsyncIterator[bytes], query: Mapping[str, str]
) -> str:
    """Read an upload through only to fingerprint it (a duplicate of a bound Idempotency-Key)."""
    form = FormReader(content_type, "file", CsvOptions.model_fields)
    digest = hashlib.sha256()
    options = CsvOptions()
    async for block in body:
        for event in form.feed(block):
            match event:
                case FileStart(fields):
                    options = options_of(query, fields)
                case FileData(data):
                    digest.update(data)
    form.finish()
    return _fingerprint(digest.digest(), options)


def _fingerprint(file_sha256: bytes, options: CsvOptions) -> str:
    return fingerprint(file_sha256, orjson.dumps(options.model_dump(mode="json")))


async def idle_bounded(body: AsyncIterator[bytes], seconds: float) -> AsyncIterator[bytes]:
    """`body`'s blocks, or `UploadStalled` once none arrives for `seconds`: neither uvicorn nor
    the ASGI protocol bounds the wait for the next block of a request body."""
    blocks = aiter(body)
    while True:
        try:
            block = await asyncio.wait_for(anext(blocks), seconds)
        except StopAsyncIteration:
            return
        except TimeoutError:
            raise UploadStalled(
                f"the upload sent nothing for {seconds:g} s (MLQUEUE_UPLOAD_IDLE_TIMEOUT) and "
                "was abandoned; send the file again"
            ) from None
        yield block
