"""The gateway's side of the job store (see `shared.jobstore`), over an asyncio Redis client."""

from __future__ import annotations

import time
from collections.abc import Collection
from typing import Any

from redis.asyncio import Redis

from shared import jobstore, webhooks
from shared.errors import JobNotFound
from shared.redisio import text
from shared.replication import ReplicaWait
from shared.schemas import JobStatus, JobView


class JobStore:
    """Creates job records and reads or cancels them on behalf of their owner.

    A caller sees the jobs it owns. Ownerless jobs (enqueued directly through Celery, or created
    before keys were turned on) are seen only when keys are off (owner "") or by an admin key.
    """

    def __init__(
        self,
        redis: Redis,
        ttl: int,
        admins: Collection[str] = (),
        wait: ReplicaWait | None = None,
    ) -> None:
        self.redis = redis
        self.ttl = ttl
        self.admins = frozenset(admins)
        self.wait = wait  # Sentinel: records and outbox entries count only once replicated
        self._cancel = redis.register_script(jobstore.CANCEL)

    async def create_many(
        self, records: list[dict[str, str]], outbox: dict[str, tuple[str, bytes]] | None = None
    ) -> None:
        """Write new jobs' records with their TTL, in one round trip. Jobs in `outbox` (job id ->
        model spec, rows as JSON) also keep what it takes to send them again until they start.
        With a `ReplicaWait`, `NotReplicated` unless a replica has them all (one WAIT per call,
        hence one per micro-batch)."""
        now = time.time()
        async with self.redis.pipeline(transaction=False) as pipe:
            # The listing index rides in the same round trip (no cost on the submit path).
            indexed: dict[str, dict[str, float]] = {}
            for record in records:
                index = indexed.setdefault(jobstore.owner_index_key(record["owner"]), {})
                index[record["id"]] = float(record["created_at"])
                key = jobstore.job_key(record["id"])
                pipe.hset(key, mapping=record)  # type: ignore[arg-type]
                if outbox and record["id"] in outbox:
                    spec, rows = outbox[record["id"]]
                    pipe.hset(key, mapping={"spec": spec, "rows": rows})
                pipe.expire(key, self.ttl)
            for index_key, members in indexed.items():
                pipe.zadd(index_key, members)
                pipe.expire(index_key, self.ttl)
            callbacks = {r["id"]: now for r in records if r.get("callback_url")}
            if callbacks:  # a worker's sweep delivers their webhooks once they finish
                pipe.zadd(webhooks.DUE, callbacks)
            if outbox:
                pipe.zadd(jobstore.PENDING, dict.fromkeys(outbox, now))
                pipe.expire(jobstore.PENDING, self.ttl)
            if self.wait is not None:
                self.wait.queue(pipe)
            replies = await pipe.execute()
        if self.wait is not None:
            self.wait.check(replies[-1], f"{len(records)} new job(s)")

    async def delete_many(self, job_ids: list[str]) -> None:
        """Forget jobs that were not accepted (message not sent, or not replicated in time), and
        their outbox entries, so that the outbox sweep never sends them."""
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.delete(*(jobstore.job_key(job_id) for job_id in job_ids))
            pipe.zrem(jobstore.PENDING, *job_ids)
            await pipe.execute()

    async def get(self, job_id: str, owner: str) -> JobView:
        """The job's view; `JobNotFound` when unknown, expired or owned by another caller."""
        return jobstore.to_view(job_id, await self._fields(job_id, owner, jobstore.VIEW_FIELDS))

    async def result(self, job_id: str, owner: str) -> tuple[JobView, bytes | None]:
        """The job's view and, once it succeeded, its predictions: the JSON array the worker
        stored, unparsed (answers send it on as it is)."""
        fields = await self._fields(job_id, owner, (*jobstore.VIEW_FIELDS, "result"))
        raw = fields.pop("result", None)
        return jobstore.to_view(job_id, fields), (bytes(raw) if raw else None)

    async def retry_input(
        self, job_id: str, owner: str
    ) -> tuple[JobView, list[list[float]] | None]:
        """The job's view and the rows it was submitted with, while they are kept."""
        fields = await self._fields(job_id, owner, (*jobstore.VIEW_FIELDS, "rows"))
        rows = jobstore.input_rows(fields)
        return jobstore.to_view(job_id, fields), rows

    async def cancel(self, job_id: str, owner: str) -> JobStatus:
        """Cancel a live job; returns the status it had before (final ones are left alone)."""
        await self._fields(job_id, owner, ("status",))
        call = jobstore.cancel_call(job_id)
        previous = jobstore.previous_status(await self._cancel(keys=call.keys, args=call.args))
        if previous is None:
            raise JobNotFound(f"job {job_id} not found", job_id=job_id)
        return previous

    async def _fields(self, job_id: str, owner: str, names: tuple[str, ...]) -> dict[str, Any]:
        # execute_command: redis-py's `hmget` wrapper inspects its arguments on every call.
        values = await self.redis.execute_command(  # type: ignore[no-untyped-call]
            "HMGET", jobstore.job_key(job_id), *names, "owner"
        )
        fields = dict(zip((*names, "owner"), values, strict=True))
        stored_owner = text(fields.pop("owner"))
        # Someone else's job is reported exactly like a missing one, so ids do not leak.
        if fields.get("status") is None or not self._may_see(stored_owner, owner):
            raise JobNotFound(f"job {job_id} not found", job_id=job_id)
        return fields

    def _may_see(self, stored_owner: str, owner: str) -> bool:
        if stored_owner:
            return stored_owner == owner
        return owner == "" or owner in self.admins
