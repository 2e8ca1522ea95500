"""Fast failover: survivors hand a dead worker node's messages back to the queue within seconds.

kombu's Redis transport keeps each delivered, unacknowledged message in the `unacked` hash
(delivery tag -> [message, exchange, routing key]) and puts it back only once its visibility
timeout has passed (12 s here): it cannot tell a long job from a dead consumer. The heartbeats
can. Each node records the delivery tags it receives in its own hash (`HELD`), and every node's
heartbeat checks the other nodes: when one has not beaten for `dead_after` seconds, the first
survivor to notice moves that node's messages from `unacked` back to the head of their queue.

Exactly once: each move is one Lua script that acts only while the message is still
unacknowledged and unchanged, and removes it from `unacked` in the same step, so two survivors (or
a survivor and kombu's own visibility-timeout restore) can never both requeue it. A message
whose node was only slow, not dead, may then run twice; its job's final state is sticky and a
scored CSV chunk is skipped, so each job still gets exactly one result.

Each node prunes its own record every beat (what it acknowledged is gone from `unacked`), and a
node restarting under the same name (a container restart keeps its hostname) first hands back
what its previous life still held.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any, Final

import orjson
from celery import signals
from redis import Redis, RedisError

from shared.jobstore import PREFIX, WORKERS
from shared.tasks import WORKER_QUEUES

log = logging.getLogger(__name__)

NODES: Final = f"{PREFIX}:held-nodes"  # set: nodes that may hold messages
# The last sign of life of the latest node found dead: for a while after it, the outbox resender
# (worker.resender) treats what was sent before as possibly lost with that node, see below.
DIED: Final = f"{PREFIX}:node-died"
DIED_SECONDS: Final = 60
# A node's record and the node set live a day past the last receipt: a node idle that long holds
# nothing, and whatever a vanished node held is restored by the visibility timeout anyway.
HELD_SECONDS: Final = 86400
# kombu's Redis transport: its unacked hash and index, and how it names a priority's list.
UNACKED: Final = "unacked"
UNACKED_INDEX: Final = "unacked_index"
PRIORITY_STEPS: Final = (0, 3, 6, 9)
PRIORITY_SEP: Final = "\x06\x16"


def held_key(node: str) -> str:
    """The hash of delivery tag -> receive time for what `node` holds."""
    return f"{PREFIX}:held:{node}"


# KEYS[1] held, KEYS[2] unacked. Forget the tags this node no longer holds (acked or restored).
PRUNE = """
local n = 0
for _, tag in ipairs(redis.call('HKEYS', KEYS[1])) do
  if redis.call('HEXISTS', KEYS[2], tag) == 0 then
    redis.call('HDEL', KEYS[1], tag)
    n = n + 1
  end
end
return n
"""

# KEYS[1] unacked, KEYS[2] unacked_index, KEYS[3] queue list, KEYS[4] held; ARGV: tag, the
# unacked entry as read, the message to push. Requeues only if the entry is unchanged (RPUSH:
# kombu pops from the right, so it is the next message taken). Returns 1 if it moved it.
RESTORE = """
local moved = 0
if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then
  redis.call('HDEL', KEYS[1], ARGV[1])
  redis.call('ZREM', KEYS[2], ARGV[1])
  redis.call('RPUSH', KEYS[3], ARGV[3])
  moved = 1
end
redis.call('HDEL', KEYS[4], ARGV[1])
return moved
"""

# KEYS[1] held, KEYS[2] nodes; ARGV[1] node. Forget a node once it holds nothing.
FORGET = """
if redis.call('HLEN', KEYS[1]) == 0 then
  redis.call('SREM', KEYS[2], ARGV[1])
  return 1
end
return 0
"""


class Failover:
    """This node's record of what it holds, and the sweep that takes over dead nodes."""

    def __init__(self, redis: Redis, node: str, dead_after: float) -> None:
        self.redis = redis
        self.node = node
        self.dead_after = dead_after
        # Since when this node has reached Redis without a gap: silence from the others means
        # nothing while Redis (or this node) was away, since nobody could beat then.
        self._reachable_since = time.time()
        self._last_sweep = 0.0
        self._prune = redis.register_script(PRUNE)
        self._restore = redis.register_script(RESTORE)
        self._forget = redis.register_script(FORGET)

    def received(self, delivery_tag: str) -> None:
        """Record a message this node was given (called in the consumer, on receipt)."""
        self.received_many([delivery_tag])

    def received_many(self, delivery_tags: Sequence[str]) -> None:
        """Record several messages in one round trip (a batch of direct tasks, when it starts)."""
        if not delivery_tags:
            return
        now = time.time()
        try:
            with self.redis.pipeline(transaction=False) as pipe:
                pipe.hset(held_key(self.node), mapping=dict.fromkeys(delivery_tags, now))
                pipe.expire(held_key(self.node), HELD_SECONDS)
                pipe.sadd(NODES, self.node)
                pipe.expire(NODES, HELD_SECONDS)
                pipe.execute()
        except RedisError as exc:  # then only the visibility timeout restores it, as before
            log.warning("could not record a received message: %s", exc)

    def sweep(self) -> int:
        """Prune this node's record, take over dead nodes; returns how many messages moved."""
        now = time.time()
        if now - self._last_sweep > 2 * self.dead_after / 3:  # a gap of two beats or more
            self._reachable_since = now
        self._last_sweep = now
        try:
            return self._sweep()
        except RedisError as exc:  # Redis away: the next beat tries again
            self._last_sweep = 0.0
            log.warning("failover sweep skipped: %s", exc)
            return 0

    def _sweep(self) -> int:
        self._prune(keys=[held_key(self.node), UNACKED])
        now = time.time()
        moved = 0
        if now - self._reachable_since < self.dead_after:
            return 0  # after a Redis outage, give the others time to beat again
        for raw in self.redis.smembers(NODES):
            node = raw.decode() if isinstance(raw, bytes) else str(raw)
            if node == self.node:
                continue
            seen = self._last_sign_of_life(node)
            if now - seen < self.dead_after:
                continue
            # One survivor at a time per dead node; short, so a node that comes back and dies
            # again soon is taken over again at once (the moves are exactly-once regardless).
            claim = max(1, round(self.dead_after))
            if self.redis.set(f"{PREFIX}:takeover:{node}", self.node, nx=True, ex=claim):
                moved += self.take_over(node, f"no heartbeat for {self.dead_after:g} s")
                if now - seen < DIED_SECONDS:
                    self.redis.set(DIED, seen, ex=DIED_SECONDS)
        return moved

    def died_before(self) -> float | None:
        """When the latest dead node was last seen, for a minute after it was found dead.

        A message it had popped from the queue but not yet recorded as unacknowledged (kombu
        does that in two steps) is in no list at all. The gateway's outbox still has it, and
        the resender sends it again once the queue is empty; with this time it need not wait
        for its grace period (about 16 s), only for what was sent before the node died.
        """
        try:
            value = self.redis.get(DIED)
        except RedisError:
            return None
        return float(value) if value else None

    def _last_sign_of_life(self, node: str) -> float:
        # Its last beat; or, for a node that has not beaten yet (or has stopped), its last receipt.
        beat = self.redis.zscore(WORKERS, node)
        if beat is not None:
            return float(beat)
        return max((float(v) for v in self.redis.hvals(held_key(node))), default=0.0)

    def take_over(self, node: str, why: str) -> int:
        """Requeue every message `node` still holds; returns how many were moved."""
        moved = 0
        for raw_tag in self.redis.hkeys(held_key(node)):
            tag = raw_tag.decode() if isinstance(raw_tag, bytes) else str(raw_tag)
            entry: bytes | None = self.redis.hget(UNACKED, tag)  # type: ignore[assignment]
            queue, message = _requeued(entry) if entry else ("", b"")
            if not entry or not queue:  # acknowledged meanwhile, or not ours to requeue
                self.redis.hdel(held_key(node), tag)
                continue
            moved += int(
                self._restore(
                    keys=[UNACKED, UNACKED_INDEX, queue, held_key(node)],
                    args=[tag, entry, message],
                )
            )
        self._forget(keys=[held_key(node), NODES], args=[node])
        if moved:
            log.warning(
                "took over a worker node's messages",
                extra={"node": node, "messages": moved, "reason": why},
            )
        return moved


def _requeued(entry: bytes) -> tuple[str, bytes]:
    """The list to push an unacked entry's message onto, and the message, marked redelivered.

    What kombu's own restore does, back onto its own queue (a priority's, or the webhooks'); a
    message routed to no queue the workers consume goes to a list no worker reads, so it is left
    alone (the visibility timeout restores it as before).
    """
    message, _exchange, routing_key = orjson.loads(entry)
    if routing_key not in WORKER_QUEUES:
        return "", b""
    message.setdefault("headers", {})["redelivered"] = True
    message.setdefault("properties", {}).setdefault("delivery_info", {})["redelivered"] = True
    try:
        priority = max(0, min(int(message["properties"].get("priority") or 0), 9))
    except (TypeError, ValueError):
        priority = 0
    step = max(s for s in PRIORITY_STEPS if s <= priority)
    queue = f"{routing_key}{PRIORITY_SEP}{step}" if step else routing_key
    return queue, orjson.dumps(message)


def install(redis: Redis, node: str, heartbeat_interval: float) -> Failover:
    """Start recording what this node receives; hand back what a previous life held.

    A node is dead after three missed beats: the same window `/readyz` counts live workers in.
    """
    failover = Failover(redis, node, dead_after=3 * heartbeat_interval)
    try:
        failover.take_over(node, "this node restarted")
    except RedisError as exc:
        log.warning("could not hand back a previous run's messages: %s", exc)

    def _received(request: Any, **_: Any) -> None:
        tag = getattr(getattr(request, "message", None), "delivery_tag", None)
        if tag and not getattr(request, RECORDED_LATER, False):
            failover.received(str(tag))

    global _installed
    _installed = failover
    signals.task_received.connect(_received, weak=False)
    return failover


# A request marked so (`worker.direct_strategy`) is recorded with its batch, in one round trip,
# instead of on receipt: each receipt's write would block the consumer for a Redis round trip.
# Until then only the visibility timeout would restore it if this node died, as before this.
RECORDED_LATER: Final = "mlqueue_recorded_later"
_installed: Failover | None = None


def received_many(delivery_tags: Sequence[str]) -> None:
    """Record messages this node holds, if failover is installed (in the worker's consumer)."""
    if _installed is not None:
        _installed.received_many(delivery_tags)
