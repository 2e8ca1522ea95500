"""A workaround for a kombu Redis-transport crash when Redis dies under a worker.

On a lost broker connection Celery closes the old channel, and kombu then hands the channel's
unacknowledged messages back to Redis (`QoS.restore_unacked`). When the connection's details are
already gone this raises `AttributeError: 'NoneType' object has no attribute 'hostname'` (kombu
`_connparams`), which Celery treats as unrecoverable: the whole worker exits (seen in `make drill`,
Redis SIGKILLed under load, about one run in four; kombu issues #582 and #970 show the same path).
Skipping the hand-back is safe: the messages stay in Redis's `unacked` hash, and any worker
restores them once the visibility timeout has passed.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any

from kombu.transport import redis as kombu_redis

log = logging.getLogger(__name__)


def tolerate_lost_connection(restore: Callable[..., Any]) -> Callable[..., Any]:
    """`restore`, returning None instead of raising when the connection is already gone."""

    @functools.wraps(restore)
    def restore_unacked(self: Any, client: Any = None) -> Any:
        try:
            return restore(self, client)
        except AttributeError as exc:
            log.warning(
                "broker connection gone before unacknowledged messages could be handed back "
                "(%s); they return after the visibility timeout",
                exc,
            )
            return None

    restore_unacked.patched = True  # type: ignore[attr-defined]
    return restore_unacked


def apply() -> None:
    """Install the workaround (idempotent)."""
    qos = kombu_redis.QoS
    if not getattr(qos.restore_unacked, "patched", False):
        qos.restore_unacked = tolerate_lost_connection(qos.restore_unacked)  # type: ignore[method-assign]
