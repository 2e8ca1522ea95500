"""The gateway image's health probe (`python -m gateway.healthcheck`)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from devrun import processes
from gateway.healthcheck import healthz_url, probe
from shared.settings import Settings


class Healthz(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200 if self.path == "/healthz" else 503)
        self.end_headers()

    def log_message(self, *_: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[str]:
    httpd = HTTPServer(("127.0.0.1", 0), Healthz)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)


def test_probe_is_0_on_200_and_1_otherwise(server: str) -> None:
    assert probe(f"{server}/healthz") == 0
    assert probe(f"{server}/other") == 1
    assert probe(f"http://127.0.0.1:{processes.free_port()}/healthz", timeout=1) == 1


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("0.0.0.0", "http://127.0.0.1:9000/healthz"),
        ("::", "http://127.0.0.1:9000/healthz"),
        ("10.1.2.3", "http://10.1.2.3:9000/healthz"),
        ("fd00::1", "http://[fd00::1]:9000/healthz"),
    ],
)
def test_the_url_follows_the_settings(host: str, expected: str) -> None:
    assert healthz_url(Settings(host=host, port=9000)) == expected
