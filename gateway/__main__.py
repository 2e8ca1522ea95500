"""Run the gateway with uvicorn, configured from settings: `python -m gateway`."""

from __future__ import annotations

import uvicorn

from shared.logs import configure_logging
from shared.settings import get_settings


def main() -> None:
    """Serve until interrupted."""
    settings = get_settings()
    configure_logging(settings.log_level)  # uvicorn's startup lines too, before the lifespan
    uvicorn.run(
        "gateway.app:create_app",
        factory=True,
        host=settings.host,
        port=settings.port,
        workers=settings.gateway_workers,
        log_config=None,  # keep our JSON handler; each process also sets it in the lifespan
        timeout_keep_alive=5,
        timeout_graceful_shutdown=10,
        limit_concurrency=2048,
    )


if __name__ == "__main__":
    main()
