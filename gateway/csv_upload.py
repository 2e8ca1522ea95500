"""Stream a multipart CSV upload into stored, enqueued chunks: one chunk in memory, none on disk.

The body is read block by block from `request.stream()` and fed to a push parser
(`gateway.multipart`). The file's first record decides the layout (a header error is a 422
before any job exists); then each chunk is stored in Redis and its task sent as soon as it is cut,
so workers score while the upload goes on. If the upload fails half-way (413, bad line, client
gone), the job and its chunks are deleted: the client never received its id.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import csv
import logging
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from celery import Celery
from kombu.exceptions import OperationalError
from starlette.concurrency import run_in_threadpool

from gateway import metrics
from gateway.csv_store import CsvStore
from gateway.multipart import Multipart, boundary_of
from gateway.store import JobStore
from shared import csvjobs, jobstore
from shared.chunks import BOM, Chunk, Chunker, split_first
from shared.csvformat import Layout, layout_for
from shared.errors import InvalidInput, JobConflict, QueueUnavailable
from shared.registry import Registry
from shared.schemas import JobAccepted, JobStatus, ModelInfo
from shared.settings import Settings
from shared.tasks import QUEUE, SCORE_CHUNK

PUBLISH_RETRY = {"max_retries": 2, "interval_start": 0.1, "interval_step": 0.2, "interval_max": 0.5}
TEXT_CHECK_BYTES = 64 * 1024
MAX_FIELD_BYTES = 1024
OPTIONS = ("model", "id_column", "on_error", "ignore_extra")
log = logging.getLogger(__name__)


class CsvUpload:
    """One upload: options, header, job record, then chunks as they are cut."""

    def __init__(
        self,
        settings: Settings,
        registry: Registry,
        jobs: JobStore,
        celery: Celery,
        owner: str,
        options: dict[str, str],
    ) -> None:
        self.settings, self.registry, self.jobs, self.celery = settings, registry, jobs, celery
        self.chunks = CsvStore(jobs.redis, settings.result_ttl)
        self.owner = owner
        self.options = options
        self.job_id = ""
        self.stopped = False  # the job ended during the upload: read on, store nothing
        self._field: str | None = None
        self._value = b""
        self._file = "none"  # none, reading, done
        self._head = b""
        self._chunker: Chunker | None = None
        self._done_seen = 0
        self._started = 0.0
        self.info: ModelInfo
        self.layout: Layout
        self.id_column: str | None = None
        self.ignore_extra = False
        self.on_error = "fail"

    async def run(self, content_type: str, body: AsyncIterator[bytes]) -> JobAccepted:
        """Read the whole body; returns the accepted job (or raises, leaving nothing behind)."""
        multipart = Multipart(boundary_of(content_type))
        self._started = time.perf_counter()
        try:
            async for block in body:
                for event, value in multipart.feed(block):
                    await self._on(event, value)
            multipart.parser.finalize()
            if self._file != "done":
                raise InvalidInput("no complete file in the form: upload the CSV as field `file`")
            return await self._finish()
        except BaseException:
            if self.job_id:
                with contextlib.suppress(Exception):
                    await asyncio.shield(self.chunks.abort(self.job_id))
            raise

    async def _on(self, event: str, value: Any) -> None:
        if event == "part":
            name = value
            if name == "file" and self._file == "none":
                self._resolve_options()
                self._file = "reading"
            elif self._file != "none":
                raise InvalidInput(f"form field {name!r} must come before the file")
            else:
                self._field, self._value = name, b""
        elif event == "data":
            if self._file == "reading":
                await self._file_data(value)
            elif self._field is not None:
                self._value += value
                if len(self._value) > MAX_FIELD_BYTES:
                    raise InvalidInput(f"form field {self._field!r} is too long")
        elif self._file == "reading":
            await self._file_end()
        elif self._field in OPTIONS:
            self.options[self._field] = self._value.decode("utf-8", "replace").strip()

    async def _file_data(self, block: bytes) -> None:
        if self._chunker is not None:
            for chunk in self._chunker.feed(block):
                await self._send(chunk)
        else:
            self._head += block
            await self._start(final=False)

    async def _file_end(self) -> None:
        if self._chunker is None and not await self._start(final=True):
            raise InvalidInput("the file is empty: expected a CSV with one row per sample")
        assert self._chunker is not None
        for chunk in self._chunker.finish():
            await self._send(chunk)
        self._file = "done"

    async def _start(self, final: bool) -> bool:
        """Once the first record is complete: check text, read the layout, create the job."""
        head = self._head.removeprefix(BOM)
        check_text(head[:TEXT_CHECK_BYTES], final)
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

    def _resolve_options(self) -> None:
        """Options are complete when the file part starts: check them before reading it."""
        self.info = self.registry.resolve(self.options.get("model") or "default")
        self.id_column = self.options.get("id_column") or None
        self.ignore_extra = parse_bool(self.options.get("ignore_extra", ""))
        self.on_error = self.options.get("on_error") or "fail"
        if self.on_error not in csvjobs.ON_ERROR:
            raise InvalidInput(
                f"on_error must be one of {list(csvjobs.ON_ERROR)}, not {self.on_error!r}"
            )

    def _layout(self, record: bytes) -> Layout:
        try:
            text = record.decode("utf-8").removesuffix("\n").removesuffix("\r")
        except UnicodeDecodeError as exc:
            raise InvalidInput("line 1: not UTF-8 text; upload a CSV file") from exc
        cells = next(csv.reader([text]), [])
        return layout_for(cells, self.info.feature_names, self.id_column, self.ignore_extra)

    async def _create(self, layout: Layout) -> None:
        self.layout = layout
        self.job_id = str(uuid.uuid4())
        record = jobstore.new_record(
            self.job_id, kind="csv", model=self.info.name, n_rows=None, owner=self.owner
        )
        record.update(
            version=self.info.version,
            chunks_done="0",
            chunks_sent="0",
            rows_done="0",
            rows_skipped="0",
            on_error=self.on_error,
            id_column=self.id_column or "",
        )
        await self.jobs.create_many([record])

    async def _send(self, chunk: Chunk) -> None:
        await self._wait_for_room(chunk.index)
        kwargs = csvjobs.task_kwargs(
            self.job_id,
            chunk.index,
            chunk.first_line,
            chunk.rows,
            f"{self.info.name}:{self.info.version}",
            self.layout,
            self.on_error,
        )
        if self.stopped or not await self.chunks.store(self.job_id, chunk, kwargs):
            self.stopped = True
            return
        try:
            await run_in_threadpool(
                self.celery.send_task,
                SCORE_CHUNK,
                kwargs=kwargs,
                task_id=f"{self.job_id}.{chunk.index}",
                queue=QUEUE,
                retry=True,
                retry_policy=PUBLISH_RETRY,
            )
        except (OperationalError, OSError) as exc:
            raise QueueUnavailable("the job queue is unavailable; retry shortly") from exc

    async def _wait_for_room(self, index: int) -> None:
        """Hold the upload while too many chunks wait to be scored (bounds Redis memory)."""
        while not self.stopped and index - self._done_seen >= self.settings.csv_max_pending_chunks:
            status, self._done_seen = await self.chunks.progress(self.job_id)
            if status not in ("queued", "running"):
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
        if status not in JobStatus.__members__.values():
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
            status=JobStatus(status),
            model=self.info.name,
            n_rows=self._chunker.rows_total,
            location=f"/v1/jobs/{self.job_id}",
        )


def check_text(head: bytes, final: bool) -> None:
    """Refuse a file that is not UTF-8 text, from its first bytes."""
    if b"\x00" in head:
        raise InvalidInput("the file is not text (it contains NUL bytes); upload a CSV file")
    try:
        codecs.getincrementaldecoder("utf-8")().decode(head, final=final)
    except UnicodeDecodeError as exc:
        raise InvalidInput(
            f"the file is not UTF-8 text (byte {exc.start + 1}); upload a CSV file"
        ) from exc


def parse_bool(value: str) -> bool:
    """A form or query flag: true/1/yes/on or false/0/no/off/empty."""
    text = value.strip().lower()
    if text in ("true", "1", "yes", "on"):
        return True
    if text in ("", "false", "0", "no", "off"):
        return False
    raise InvalidInput(f"ignore_extra must be true or false, not {value!r}")
