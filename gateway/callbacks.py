"""A submit's `callback_url`: checked (SSRF guard, a secret to sign with), then recorded."""

from __future__ import annotations

import asyncio

from shared import webhooks
from shared.errors import InvalidInput
from shared.settings import Settings


async def webhook_fields(settings: Settings, url: str | None) -> dict[str, str]:
    """The record fields of a job with this callback (none without one); `InvalidInput` (422)
    for a URL the guard refuses, or when no `MLQUEUE_WEBHOOK_SECRET` is configured."""
    if not url:
        return {}
    if settings.webhook_secret is None:
        raise InvalidInput("callback_url: webhooks are off here (MLQUEUE_WEBHOOK_SECRET unset)")
    # Resolving the host blocks: off the event loop.
    await asyncio.to_thread(webhooks.check_url, url, settings.webhook_allowed_hosts)
    return {"callback_url": url, "webhook_state": "pending", "webhook_attempts": "0"}
