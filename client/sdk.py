"""`Client`: the synchronous SDK of the mlqueue HTTP API, on httpx."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import IO, Any

import httpx

from client import _shared as s
from client import errors
from client.models import (
    Aliases,
    AliasTarget,
    CsvErrors,
    History,
    Job,
    JobAccepted,
    JobPage,
    JobResult,
    Models,
)

DEFAULT_URL = "http://127.0.0.1:8000"


class Client:
    """Talks to the gateway at `url`, sending `api_key` as a Bearer token when given.

    Use it as a context manager (or call `close()`). Every call retries by `retry` on 429
    (honouring Retry-After), 503 (with backoff) and connection failures, then raises."""

    def __init__(
        self,
        url: str = DEFAULT_URL,
        api_key: str | None = None,
        *,
        timeout: float = 60.0,
        retry: s.Retry | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self.retry = retry or s.Retry()
        self.events: bool | None = None  # whether the gateway has live job events (None: unknown)
        # Uploads may stall while workers catch up (the gateway holds big files back): no write
        # timeout; reads keep one, above the 30 s long polls.
        self.http = httpx.Client(
            base_url=self.url,
            headers=s.headers(api_key),
            timeout=httpx.Timeout(timeout, write=None),
            transport=transport,
        )

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection pool."""
        self.http.close()

    def submit(
        self,
        rows: s.Rows | Any,
        model: str = "default",
        *,
        priority: int | None = None,
        idempotency_key: str | None = None,
    ) -> JobAccepted:
        """Enqueue `rows` (a sequence of feature rows, or a 2-D numpy array) for prediction."""
        response = self._send(
            "POST",
            "/v1/jobs",
            json=s.submit_body(rows, model, priority),
            headers=s.key_header(idempotency_key),
        )
        return JobAccepted.model_validate_json(response.content)

    def get(self, job_id: str) -> Job:
        """The job's status, progress and error."""
        return Job.model_validate_json(self._send("GET", f"/v1/jobs/{job_id}").content)

    def jobs(
        self,
        *,
        status: str | None = None,
        kind: str | None = None,
        limit: int = 20,
        cursor: str | None = None,
    ) -> JobPage:
        """A page of this key's jobs, newest first; pass `next_cursor` back as `cursor` for the
        next. A gateway without the listing answers 405 (an `ApiError`)."""
        given = {"status": status, "kind": kind, "limit": str(limit), "cursor": cursor}
        params = {k: v for k, v in given.items() if v is not None}
        return JobPage.model_validate_json(self._send("GET", "/v1/jobs", params=params).content)

    def wait(
        self,
        job_id: str,
        timeout: float | None = None,
        *,
        poll: float = 30.0,
        on_progress: Callable[[Job], None] | None = None,
    ) -> Job:
        """Block until the job ends and return it: long polls of up to `poll` s, or, with
        `on_progress`, the job's live events when the gateway has them (`on_progress` gets the job
        at each change or poll). Raises `WaitTimeout` after `timeout` s."""
        deadline = None if timeout is None else time.monotonic() + timeout
        if on_progress is not None and self.events is not False:
            followed = self._follow_events(job_id, deadline, on_progress)
            if followed is not None:
                return followed
        while True:
            left = poll if deadline is None else max(0.0, deadline - time.monotonic())
            job = self._long_poll(job_id, min(poll, left, 30.0))
            if job is None:
                return self.get(job_id)
            if on_progress is not None:
                on_progress(job)
            if deadline is not None and time.monotonic() >= deadline:
                raise errors.WaitTimeout(job)

    def result(self, job_id: str, wait: float | None = None) -> JobResult:
        """The predictions of a JSON job, waiting up to `wait` s (forever when None) for the end.
        Raises `JobFailed` if it failed or was cancelled; a CSV job's result is `download()`."""
        job = self.wait(job_id, wait)
        if job.status != "succeeded":
            raise errors.JobFailed(job)
        response = self._send("GET", f"/v1/jobs/{job_id}/result")
        if not response.headers.get("content-type", "").startswith("application/json"):
            raise errors.MlqueueError(f"job {job_id} is a CSV job: use download()")
        return JobResult.model_validate_json(response.content)

    def predict(self, rows: s.Rows | Any, model: str = "default", **kwargs: Any) -> list[float]:
        """Submit, wait and return the predictions: one per row, in order."""
        accepted = self.submit(rows, model, **kwargs)
        return self.result(accepted.job_id).data

    def cancel(self, job_id: str) -> Job:
        """Cancel a queued or running job (a `Conflict` if it has finished)."""
        return Job.model_validate_json(self._send("DELETE", f"/v1/jobs/{job_id}").content)

    def models(self) -> Models:
        """The models the gateway serves, with their versions, features and metrics."""
        return Models.model_validate_json(self._send("GET", "/v1/models").content)

    def aliases(self, name: str) -> Aliases:
        """The aliases of model `name` and where each points."""
        return Aliases.model_validate_json(self._send("GET", f"/v1/models/{name}/aliases").content)

    def set_alias(self, name: str, alias: str, target: AliasTarget | int) -> Aliases:
        """Point `name@alias` at a version (an int) or a target (a canary split, a shadow);
        needs an admin key. Every gateway and worker follows within a second."""
        if isinstance(target, int):
            target = AliasTarget(version=target)
        path = f"/v1/models/{name}/aliases/{alias}"
        return Aliases.model_validate_json(self._send("PUT", path, json=target.body()).content)

    def promote(self, name: str, version: int, alias: str = "production") -> Aliases:
        """Point `name@alias` (production by default) at `version`."""
        return self.set_alias(name, alias, version)

    def delete_alias(self, name: str, alias: str) -> Aliases:
        """Remove `name@alias` (a `NotFound` if it does not exist); needs an admin key."""
        path = f"/v1/models/{name}/aliases/{alias}"
        return Aliases.model_validate_json(self._send("DELETE", path).content)

    def history(self, name: str) -> History:
        """The alias changes of model `name`, newest first."""
        return History.model_validate_json(self._send("GET", f"/v1/models/{name}/history").content)

    def rollback(self, name: str, alias: str = "production") -> Aliases:
        """Undo the last change of `name@alias`: point it where it pointed before (a
        `ValueError` if it had no earlier target). Rolling back twice undoes the rollback."""
        last = next((c for c in self.history(name).changes if c.alias == alias), None)
        if last is None or last.from_ is None:
            raise ValueError(f"{name}@{alias} has no earlier target to roll back to")
        return self.set_alias(name, alias, last.from_)

    def errors(
        self, job_id: str, *, limit: int | None = None, cursor: str | None = None
    ) -> CsvErrors:
        """One page of the bad lines of a CSV job, by line and column (`next_cursor` names the
        next page)."""
        params = {k: str(v) for k, v in {"limit": limit, "cursor": cursor}.items() if v is not None}
        path = f"/v1/jobs/{job_id}/errors"
        return CsvErrors.model_validate_json(self._send("GET", path, params=params).content)

    def submit_csv(
        self,
        source: s.Source,
        *,
        model: str | None = None,
        id_column: str | None = None,
        on_error: str = "fail",
        ignore_extra: bool = False,
        idempotency_key: str | None = None,
        on_progress: s.OnStep | None = None,
    ) -> JobAccepted:
        """Stream a CSV file (a path or a binary file) to `POST /v1/jobs/csv`."""
        upload = s.Upload(source, s.csv_fields(model, id_column, on_error, ignore_extra))
        report = on_progress or (lambda _: None)
        response = self._send(
            "POST",
            "/v1/jobs/csv",
            upload=upload,
            headers=s.key_header(idempotency_key),
            progress=lambda n: report(s.Step("upload", n, upload.file_size)),
        )
        return JobAccepted.model_validate_json(response.content)

    def download(self, job_id: str, out: s.Sink, on_progress: s.OnStep | None = None) -> int:
        """Stream a finished CSV job's result into `out` (a path or a binary file); the bytes."""
        fh, mine = s.open_sink(out)
        try:
            return self._download(job_id, fh, on_progress or (lambda _: None))
        finally:
            if mine:
                fh.close()

    def score_csv(
        self,
        source: s.Source,
        out: s.Sink,
        *,
        on_progress: s.OnStep | None = None,
        timeout: float | None = None,
        **options: Any,
    ) -> Job:
        """Upload, wait, download: score a CSV file into `out`; `on_progress` gets a `Step` per
        block sent, per poll and per block received. Raises `JobFailed` if the job fails."""
        report = on_progress or (lambda _: None)
        accepted = self.submit_csv(source, on_progress=report, **options)
        job = self.wait(
            accepted.job_id, timeout, poll=0.5, on_progress=lambda j: report(s.scoring_step(j))
        )
        if job.status != "succeeded":
            raise errors.JobFailed(job)
        report(s.scoring_step(job))
        self.download(job.job_id, out, report)
        return job

    def _follow_events(
        self, job_id: str, deadline: float | None, on_progress: Callable[[Job], None]
    ) -> Job | None:
        """The finished job, followed by its live events; None if the gateway has none, the
        stream ended early, or the deadline passed (the long polls take over)."""
        path = f"/v1/jobs/{job_id}/events"
        # Between two lines (events or heartbeats) wait no longer than the time left: the
        # deadline is checked at each line, so `wait` returns by about twice its timeout at worst.
        read = self.http.timeout.read if deadline is None else deadline - time.monotonic()
        timeout = httpx.Timeout(self.http.timeout.connect, read=max(0.1, read or 60.0))
        try:
            with self.http.stream(
                "GET", path, headers={"Accept": "text/event-stream"}, timeout=timeout
            ) as response:
                if not s.is_event_stream(response):
                    response.read()
                    self.events = False if s.lacks_events(response) else self.events
                    return None
                self.events = True
                parser = s.EventLines()
                for line in response.iter_lines():
                    job = parser.feed(line)
                    if job is not None:
                        on_progress(job)
                        if job.status.finished:
                            return job
                    if deadline is not None and time.monotonic() >= deadline:
                        return None
        except httpx.TransportError:
            pass  # or a read timeout at the deadline: the long polls take over from here
        return None

    def _long_poll(self, job_id: str, wait: float) -> Job | None:
        """The job if it is still running after `wait` s, None once it has ended."""
        with self._stream(f"/v1/jobs/{job_id}/result", {"wait": f"{wait:g}"}) as response:
            if response.status_code == 202:
                return Job.model_validate_json(response.read())
            return None  # 200 (the result, not read here) or 409 (failed or cancelled)

    def _download(self, job_id: str, fh: IO[bytes], report: s.OnStep) -> int:
        with self._stream(f"/v1/jobs/{job_id}/result") as response:
            if response.status_code != 200:
                raise errors.MlqueueError(f"job {job_id} has no result yet")
            total = int(response.headers.get("content-length", 0)) or None
            done = 0
            for block in response.iter_bytes(s.BLOCK):
                fh.write(block)
                done += len(block)
                report(s.Step("download", done, total))
            return done

    @contextmanager
    def _stream(self, path: str, params: dict[str, str] | None = None) -> Iterator[httpx.Response]:
        """A GET whose body the caller reads; a 409 is the caller's to read too."""
        response = self._open_stream(path, params)
        try:
            yield response
        finally:
            response.close()

    def _open_stream(self, path: str, params: dict[str, str] | None) -> httpx.Response:
        attempt = 0
        while True:
            try:
                request = self.http.build_request("GET", path, params=params)
                response = self.http.send(request, stream=True)
                if response.status_code < 400 or response.status_code == 409:
                    return response
                response.read()
                response.close()
                error: Exception = errors.from_response(response)
            except httpx.TransportError as exc:
                error = exc
            delay = self.retry.delay(attempt, error)
            if delay is None:
                raise s.final(error, self.url) from error
            time.sleep(delay)
            attempt += 1

    def _send(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
        upload: s.Upload | None = None,
        progress: Callable[[int], None] = lambda _: None,
    ) -> httpx.Response:
        attempt = 0
        while True:
            try:
                if upload is None:
                    response = self.http.request(
                        method, path, json=json, params=params, headers=headers
                    )
                else:
                    response = self.http.request(
                        method,
                        path,
                        content=upload.parts(progress),
                        headers={**(headers or {}), **upload.headers()},
                    )
                if response.status_code < 400:
                    return response
                error: Exception = errors.from_response(response)
            except httpx.TransportError as exc:
                error = exc
            delay = self.retry.delay(attempt, error, upload=upload is not None)
            if delay is None or (upload is not None and not upload.resendable):
                raise s.final(error, self.url, upload is not None) from error
            time.sleep(delay)
            attempt += 1
