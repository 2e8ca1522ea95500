"""Run the gateway with uvicorn, configured from settings: `python -m gateway`."""

from __future__ import annotations

import uvicorn

from shared.settings import get_settings


def main() -> None:
    """Serve until interrupted."""
    settings = get_settings()
    uvicorn.run(
        "gateway.app:create_app",
        factory=True,
        host=settings.host,
        port=settings.port,
        workers=settings.gateway_workers,
        log_config=None,  # our JSON logging, configured in the lifespan
        timeout_keep_alive=5,
        timeout_graceful_shutdown=10,
        limit_concurrency=2048,
    )


if __name__ == "__main__":
    main()
