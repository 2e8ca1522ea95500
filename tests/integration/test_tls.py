"""Redis over TLS with certificate verification: gateway, worker and Celery's broker all on
`rediss://`, against Debian's redis-server (TLS-capable; `make test` installs it) serving TLS
only, with a CA and a server certificate made here."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis

from bench.stack import Stack
from devrun import processes
from tests import needs
from tests.integration.models import Sleepy, add_model, row_sums

pytestmark = pytest.mark.integration


def make_certificates(folder: Path) -> tuple[Path, Path, Path]:
    """(CA certificate, server certificate for 127.0.0.1, server key), made with openssl."""
    ca, ca_key = folder / "ca.pem", folder / "ca.key"
    cert, key, csr = folder / "server.pem", folder / "server.key", folder / "server.csr"
    ext = folder / "san.cnf"
    ext.write_text("subjectAltName=IP:127.0.0.1\n")

    def openssl(*args: str | Path) -> None:
        subprocess.run(["openssl", *map(str, args)], check=True, capture_output=True, timeout=60)

    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", ca_key, "-out", ca,
            "-days", "2", "-subj", "/CN=mlqueue test CA")  # fmt: skip
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", csr,
            "-subj", "/CN=127.0.0.1")  # fmt: skip
    openssl("x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key, "-CAcreateserial",
            "-out", cert, "-days", "2", "-extfile", ext)  # fmt: skip
    return ca, cert, key


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Stack, Path, int]]:
    root = tmp_path_factory.mktemp("tls")
    needs.binary("redis-server", how="a TLS-capable Redis: `apt-get install redis-server`")
    needs.binary("openssl", how="the openssl command makes the certificates: install openssl")
    ca, cert, key = make_certificates(root)
    add_model(root / "models", "demo", Sleepy(0.0))
    port = processes.free_port()
    server = processes.start_redis(
        port,
        root / "redis",
        log=root / "redis.log",
        # TLS only: no plain port at all, so nothing can quietly fall back to it.
        extra=["--port", "0", "--tls-port", str(port), "--tls-cert-file", str(cert),
               "--tls-key-file", str(key), "--tls-ca-cert-file", str(ca),
               "--tls-auth-clients", "no"],
    )  # fmt: skip
    url = f"rediss://127.0.0.1:{port}/0?ssl_cert_reqs=required&ssl_ca_certs={ca}"
    stack = Stack(root / "run", root / "models", url=url)
    try:
        stack.start_worker("w1", concurrency=1)
        stack.start_gateway()
        yield stack, ca, port
    finally:
        stack.stop()
        processes.stop(server)


def test_jobs_run_over_verified_tls(tls: tuple[Stack, Path, int]) -> None:
    stack, _, _ = tls
    rows = [[i + j / 8 for j in range(10)] for i in range(5)]
    with httpx.Client(base_url=stack.base_url, timeout=30) as http:
        assert http.get("/readyz").status_code == 200
        job = http.post("/v1/jobs", json={"data": rows})
        assert job.status_code == 202
        result = http.get(f"/v1/jobs/{job.json()['job_id']}/result", params={"wait": 20})
        assert result.status_code == 200 and result.json()["data"] == row_sums(rows)
        answer = http.post("/predict", json={"data": rows[:2]})
        assert answer.status_code == 200 and answer.json()["data"] == row_sums(rows[:2])
    # The job went through the TLS Redis (there is no other): its record is there.
    with stack.redis() as client:
        assert client.exists(f"mlqueue:job:{job.json()['job_id']}")


def test_the_server_certificate_is_verified(tls: tuple[Stack, Path, int]) -> None:
    _, _, port = tls
    # Without our CA the certificate does not verify: the connection is refused, not trusted.
    untrusted = redis.Redis.from_url(
        f"rediss://127.0.0.1:{port}/0?ssl_cert_reqs=required", socket_timeout=5
    )
    with pytest.raises(redis.ConnectionError, match=r"(?i)certificate verify failed"):
        untrusted.ping()
    # And nothing answers in clear text.
    with pytest.raises(redis.ConnectionError):
        redis.Redis(host="127.0.0.1", port=port, socket_timeout=2).ping()
