"""The container's health probe: `python -m gateway.healthcheck` exits 0 when `/healthz` answers.

It asks the port from settings (`MLQUEUE_PORT`), so the image needs no curl and the probe follows
the gateway wherever it listens.
"""

from __future__ import annotations

import sys
import urllib.request

from shared.settings import Settings, get_settings

# Listening on every interface means the probe can use loopback.
_ANY = {"", "0.0.0.0", "::"}  # noqa: S104 - compared against, not bound


def healthz_url(settings: Settings) -> str:
    """Where this host reaches the gateway's liveness probe."""
    host = "127.0.0.1" if settings.host in _ANY else settings.host
    host = f"[{host}]" if ":" in host else host
    return f"http://{host}:{settings.port}/healthz"


def probe(url: str, timeout: float = 3.0) -> int:
    """0 when `url` answers 200 within `timeout` s, else 1 (Docker's "unhealthy")."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - http only
            return 0 if response.status == 200 else 1
    except OSError as exc:
        print(f"healthcheck: {url}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(probe(healthz_url(get_settings())))
