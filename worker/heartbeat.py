"""Worker liveness in Redis: a sorted set of node names scored by their last beat.

`/readyz` counts recent beats instead of broadcasting `celery inspect ping`, which costs a second
of waiting whenever no worker answers.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Sequence

from redis import Redis, RedisError

from shared.jobstore import WORKERS

log = logging.getLogger(__name__)


class Heartbeat:
    """A daemon thread that beats every `interval` seconds until stopped, doing `chores` too."""

    def __init__(
        self, redis: Redis, node: str, interval: float, chores: Sequence[Callable[[], object]] = ()
    ) -> None:
        self.redis = redis
        self.node = node
        self.interval = interval
        self.chores = chores
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="mlqueue-heartbeat", daemon=True)

    def start(self) -> None:
        """Beat now and then periodically."""
        self._thread.start()

    def stop(self) -> None:
        """Stop beating and remove this node, so readiness drops at once."""
        self._stop.set()
        self._thread.join(timeout=self.interval + 1)
        with contextlib.suppress(RedisError):
            self.redis.zrem(WORKERS, self.node)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                now = time.time()
                with self.redis.pipeline() as pipe:
                    pipe.zadd(WORKERS, {self.node: now})
                    pipe.zremrangebyscore(WORKERS, "-inf", now - 60)
                    pipe.expire(WORKERS, 120)
                    pipe.execute()
            except RedisError as exc:  # Redis away: keep trying, the worker itself reconnects too
                log.warning("heartbeat failed: %s", exc)
            for chore in self.chores:
                try:
                    chore()
                except Exception:  # a chore must never stop the heartbeat
                    log.exception("periodic chore failed")
            self._stop.wait(self.interval)
