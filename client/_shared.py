"""What `Client` and `AsyncClient` share: the retry policy, request bodies, answers read as models,
and the streamed multipart upload. No I/O happens here except reading the file being uploaded."""

from __future__ import annotations

import os
import random
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Literal

import httpx

from client import errors
from client.models import Job

BLOCK = 256 * 1024
USER_AGENT = "mlqueue-python/0.1"

Rows = Sequence[Sequence[float]]
Source = str | os.PathLike[str] | IO[bytes]
Sink = str | os.PathLike[str] | IO[bytes]


@dataclass(frozen=True)
class Step:
    """One progress report of `score_csv`: bytes for `upload` and `download`, rows for `scoring`."""

    stage: Literal["upload", "scoring", "download"]
    done: int
    total: int | None
    job: Job | None = None


OnStep = Callable[[Step], None]


@dataclass(frozen=True)
class Retry:
    """When to try a request again. Safe for every request the SDK sends: reads are idempotent,
    and submits carry an Idempotency-Key, so a retried submit cannot make a second job."""

    attempts: int = 4
    """Tries in all, the first included."""
    backoff: float = 0.5
    """The first delay when the server gives none; doubled each try, with jitter."""
    max_delay: float = 30.0
    """No single wait is longer than this."""

    def delay(self, attempt: int, error: Exception, upload: bool = False) -> float | None:
        """Seconds to sleep before the try after `attempt` (0-based), or None to give up."""
        if attempt + 1 >= self.attempts or not self.retries(error, upload):
            return None
        backoff = self.backoff * 2.0**attempt * random.uniform(0.5, 1.0)
        advised: float | None = getattr(error, "retry_after", None)
        # 429: the server's Retry-After is the floor; 503 also backs off when it persists.
        return min(self.max_delay, max(backoff, advised or 0.0))

    @staticmethod
    def retries(error: Exception, upload: bool) -> bool:
        """Whether `error` is worth another try."""
        if isinstance(error, errors.RateLimited | errors.Unavailable):
            return True
        if isinstance(error, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout):
            return True
        # A write failing mid-upload is mostly the gateway refusing it (413) before reading all
        # of it: sending the whole file again would not help.
        return not upload and isinstance(error, httpx.ReadError | httpx.RemoteProtocolError)


def final(error: Exception, url: str, upload: bool = False) -> Exception:
    """The exception to raise once the retries are spent."""
    if upload and isinstance(error, httpx.WriteError | httpx.RemoteProtocolError):
        return errors.UploadCutOff(
            f"the gateway closed the connection during the upload ({error!r}); the file may "
            "exceed its upload limit (MLQUEUE_MAX_UPLOAD_BYTES)"
        )
    if isinstance(error, httpx.TransportError):
        return errors.Unreachable(f"cannot reach the gateway at {url}: {error!r}")
    return error


def headers(api_key: str | None) -> dict[str, str]:
    """The headers of every request."""
    sent = {"User-Agent": USER_AGENT}
    if api_key:
        sent["Authorization"] = f"Bearer {api_key}"
    return sent


def submit_body(rows: Any, model: str, priority: int | None) -> dict[str, Any]:
    """The body of `POST /v1/jobs`; `priority` only when given (older gateways refuse it)."""
    data = rows.tolist() if hasattr(rows, "tolist") else [list(row) for row in rows]
    body: dict[str, Any] = {"data": data, "model": model}
    if priority is not None:
        body["priority"] = priority
    return body


def key_header(idempotency_key: str | None) -> dict[str, str]:
    """An Idempotency-Key (a fresh one unless given): a retried request makes one job, not two."""
    return {"Idempotency-Key": idempotency_key or uuid.uuid4().hex}


def csv_fields(
    model: str | None, id_column: str | None, on_error: str, ignore_extra: bool
) -> dict[str, str]:
    """The form fields of a CSV upload (sent before the file: the gateway reads a stream)."""
    fields = {"model": model or "", "id_column": id_column or "", "on_error": on_error}
    fields["ignore_extra"] = "true" if ignore_extra else ""
    return {k: v for k, v in fields.items() if v}


class Upload:
    """A multipart/form-data body streamed from a path or a binary file: fields, then the file.

    It can be sent again (a retry) when the source is a path or a seekable file."""

    def __init__(self, source: Source, fields: dict[str, str]) -> None:
        self.source = source
        self.boundary = uuid.uuid4().hex
        label = source if isinstance(source, str | os.PathLike) else getattr(source, "name", "")
        name = Path(os.fspath(label) if isinstance(label, str | os.PathLike) else "upload.csv")
        self.head = b"".join(self._field(k, v) for k, v in fields.items())
        self.head += (
            f'--{self.boundary}\r\nContent-Disposition: form-data; name="file"; '
            f'filename="{name.name or "upload.csv"}"\r\nContent-Type: text/csv\r\n\r\n'
        ).encode()
        self.tail = f"\r\n--{self.boundary}--\r\n".encode()
        self.start = None if _is_path(source) else _tell(source)  # type: ignore[arg-type]
        self.file_size = self._file_size()

    @property
    def size(self) -> int | None:
        """The body's length in bytes, when the file's size is known."""
        if self.file_size is None:
            return None
        return len(self.head) + self.file_size + len(self.tail)

    @property
    def resendable(self) -> bool:
        """Whether the body can be produced again for a retry."""
        return _is_path(self.source) or self.start is not None

    def headers(self) -> dict[str, str]:
        """Content-Type, and Content-Length when known (else the body goes chunked)."""
        sent = {"Content-Type": f"multipart/form-data; boundary={self.boundary}"}
        if self.size is not None:
            sent["Content-Length"] = str(self.size)
        return sent

    def parts(self, progress: Callable[[int], None]) -> Iterator[bytes]:
        """The body in blocks; `progress` gets the file bytes sent so far."""
        yield self.head
        sent = 0
        with self._open() as fh:
            while block := fh.read(BLOCK):
                yield block
                sent += len(block)
                progress(sent)
        yield self.tail

    def _open(self) -> AbstractContextManager[IO[bytes]]:
        if _is_path(self.source):
            return open(os.fspath(self.source), "rb")  # type: ignore[arg-type]
        fh: IO[bytes] = self.source  # type: ignore[assignment]
        if self.start is not None:
            fh.seek(self.start)
        return nullcontext(fh)  # the caller's file stays open

    def _file_size(self) -> int | None:
        if _is_path(self.source):
            return os.stat(os.fspath(self.source)).st_size  # type: ignore[arg-type]
        if self.start is None:
            return None
        fh: IO[bytes] = self.source  # type: ignore[assignment]
        end = fh.seek(0, os.SEEK_END)
        fh.seek(self.start)
        return end - self.start

    def _field(self, name: str, value: str) -> bytes:
        return (
            f'--{self.boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'
        ).encode()


def _is_path(source: object) -> bool:
    return isinstance(source, str | os.PathLike)


def _tell(fh: IO[bytes]) -> int | None:
    try:
        return fh.tell() if fh.seekable() else None
    except (OSError, AttributeError):
        return None


def open_sink(sink: Sink) -> tuple[IO[bytes], bool]:
    """A binary file to write the result to, and whether the SDK opened it (and must close it)."""
    if isinstance(sink, str | os.PathLike):
        return open(os.fspath(sink), "wb"), True
    return sink, False


def scoring_step(job: Job) -> Step:
    """A `scoring` progress report from a job's view."""
    progress = job.progress
    done = progress.rows_done if progress else 0
    total = progress.rows_total if progress else job.n_rows
    return Step("scoring", done, total, job)


class EventLines:
    """A Server-Sent Events parser fed line by line; returns the job of each `status` event."""

    def __init__(self) -> None:
        self.data: list[str] = []
        self.event = "message"

    def feed(self, line: str) -> Job | None:
        """The job when `line` ends a `status` event, else None (comments are heartbeats)."""
        if not line:
            data, event = "\n".join(self.data), self.event
            self.data, self.event = [], "message"
            return Job.model_validate_json(data) if data and event == "status" else None
        field, _, value = line.partition(":")
        if field == "data":
            self.data.append(value.removeprefix(" "))
        elif field == "event":
            self.event = value.strip()
        return None


def is_event_stream(response: httpx.Response) -> bool:
    """Whether the answer to `GET /v1/jobs/{id}/events` is a live stream."""
    kind = response.headers.get("content-type", "")
    return response.status_code == 200 and kind.startswith("text/event-stream")


def lacks_events(response: httpx.Response) -> bool:
    """Whether the gateway has no events route (as opposed to no such job): then poll instead."""
    if response.status_code == 405:
        return True
    return response.status_code == 404 and errors.from_response(response).title == "NotFound"
