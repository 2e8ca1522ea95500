"""A small synchronous client of the mlqueue HTTP API, on httpx."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

import httpx

BLOCK = 256 * 1024
FINISHED = ("succeeded", "failed", "cancelled")


class ApiError(Exception):
    """The gateway answered with an error; `detail` is its problem body's explanation."""

    def __init__(self, status: int, detail: str, body: Any = None) -> None:
        super().__init__(f"{status}: {detail}")
        self.status = status
        self.detail = detail
        self.body = body


class Client:
    """Calls the gateway at `url`, with `Authorization: Bearer <api_key>` when a key is given."""

    def __init__(self, url: str, api_key: str | None = None, timeout: float = 60.0) -> None:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        # Uploads may stall while workers catch up (the gateway holds big files back): no write
        # timeout; reads keep one, long enough for `?wait=` polls.
        self.http = httpx.Client(
            base_url=url.rstrip("/"),
            headers=headers,
            timeout=httpx.Timeout(timeout, write=None),
        )

    def close(self) -> None:
        """Close the connection pool."""
        self.http.close()

    def submit(self, rows: Any, model: str = "default") -> dict[str, Any]:
        """Submit a JSON job."""
        return self._json("POST", "/v1/jobs", json={"data": rows, "model": model})

    def status(self, job_id: str) -> dict[str, Any]:
        """A job's status and progress."""
        return self._json("GET", f"/v1/jobs/{job_id}")

    def result(self, job_id: str, wait: float = 0) -> httpx.Response:
        """A job's result (JSON, or CSV for a CSV job); 202 while it runs."""
        response = self.http.get(f"/v1/jobs/{job_id}/result", params={"wait": wait})
        return _checked(response)

    def cancel(self, job_id: str) -> dict[str, Any]:
        """Cancel a job."""
        return self._json("DELETE", f"/v1/jobs/{job_id}")

    def errors(self, job_id: str) -> dict[str, Any]:
        """The bad lines of a CSV job."""
        return self._json("GET", f"/v1/jobs/{job_id}/errors")

    def models(self) -> dict[str, Any]:
        """The registry's models."""
        return self._json("GET", "/v1/models")

    def upload_csv(
        self,
        path: Path,
        options: dict[str, str],
        progress: Callable[[int], None] = lambda _: None,
    ) -> dict[str, Any]:
        """Stream `path` to `POST /v1/jobs/csv` (options first, then the file); `progress` gets
        the bytes sent."""
        boundary = uuid.uuid4().hex
        head = b"".join(_field(boundary, k, v) for k, v in options.items() if v)
        head += (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; '
            f'filename="{path.name}"\r\nContent-Type: text/csv\r\n\r\n'
        ).encode()
        tail = f"\r\n--{boundary}--\r\n".encode()
        size = len(head) + path.stat().st_size + len(tail)
        with path.open("rb") as fh:
            response = self.http.post(
                "/v1/jobs/csv",
                content=_body(head, fh, tail, progress),
                headers={
                    "Content-Type": f"multipart/form-data; boundary={boundary}",
                    "Content-Length": str(size),
                },
            )
        body: dict[str, Any] = _checked(response).json()
        return body

    def wait(
        self, job_id: str, on_progress: Callable[[dict[str, Any]], None], interval: float = 0.5
    ) -> dict[str, Any]:
        """Poll the job until it ends, calling `on_progress` with each view."""
        while True:
            view = self.status(job_id)
            on_progress(view)
            if view["status"] in FINISHED:
                return view
            time.sleep(interval)

    def download(self, job_id: str, out: BinaryIO, progress: Callable[[int], None]) -> None:
        """Stream a finished CSV job's result into `out`."""
        with self.http.stream("GET", f"/v1/jobs/{job_id}/result") as response:
            if response.status_code != 200:
                response.read()
                _checked(response)
                raise ApiError(response.status_code, "the result is not ready")
            for block in response.iter_bytes(BLOCK):
                out.write(block)
                progress(len(block))

    def _json(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        body: dict[str, Any] = _checked(self.http.request(method, path, **kwargs)).json()
        return body


def _field(boundary: str, name: str, value: str) -> bytes:
    return (
        f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'
    ).encode()


def _body(
    head: bytes, fh: BinaryIO, tail: bytes, progress: Callable[[int], None]
) -> Iterator[bytes]:
    yield head
    while block := fh.read(BLOCK):
        yield block
        progress(len(block))
    yield tail


def _checked(response: httpx.Response) -> httpx.Response:
    if response.status_code < 400:
        return response
    try:
        body = response.json()
        detail = str(body.get("detail") or body)
    except ValueError:
        body, detail = None, response.text.strip() or response.reason_phrase
    raise ApiError(response.status_code, detail, body)
