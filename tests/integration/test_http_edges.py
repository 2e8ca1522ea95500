"""HTTP edge cases against the real uvicorn: request smuggling shapes and made-up methods."""

from __future__ import annotations

import socket
from urllib.parse import urlsplit

import httpx
import pytest

from tests.integration.conftest import System

pytestmark = pytest.mark.integration


def raw_request(base_url: str, head: bytes, body_chunks: int, chunk: bytes) -> bytes:
    """Send `head`, then up to `body_chunks` chunks of `chunk` as chunked encoding; the answer."""
    url = urlsplit(base_url)
    with socket.create_connection((url.hostname, url.port), timeout=10) as sock:
        sock.sendall(head)
        try:
            for _ in range(body_chunks):
                sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            sock.sendall(b"0\r\n\r\n")
        except OSError:
            pass  # the server answered and closed before the body was all sent
        answer = b""
        while b"\r\n\r\n" not in answer:
            data = sock.recv(65536)
            if not data:
                break
            answer += data
    return answer


def test_content_length_with_transfer_encoding_is_refused_before_the_body(
    system: System,
) -> None:
    # A small Content-Length fronting a chunked body larger than the 8 MiB limit.
    head = (
        b"POST /v1/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"Content-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    answer = raw_request(system.base_url, head, body_chunks=9 * 16, chunk=b" " * 65536)
    status_line = answer.split(b"\r\n", 1)[0]
    assert status_line.startswith(b"HTTP/1.1 400"), answer[:300]


def test_unknown_http_methods_are_one_metrics_label(http: httpx.Client) -> None:
    # httptools refuses methods it does not know (400, the app never sees them); these it knows.
    for method in ("PROPFIND", "MKCOL", "PURGE", "LOCK", "SEARCH"):
        assert http.request(method, "/v1/jobs").status_code == 405
    assert http.request("MADEUP", "/v1/jobs").status_code == 400
    metrics = http.get("/metrics").text
    assert 'mlqueue_http_requests_total{method="other",route="/v1/jobs",status="405"}' in metrics
    for method in ("PROPFIND", "MKCOL", "PURGE", "LOCK", "SEARCH", "MADEUP"):
        assert f'method="{method}"' not in metrics
