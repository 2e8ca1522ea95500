"""The gateway's side of the job store (see `shared.jobstore`), over an asyncio Redis client."""

from __future__ import annotations

import time
from collections.abc import Collection
from typing import Any

from redis.asyncio import Redis

from gateway.autopipe import AutoPipeline
from gateway.quotas import ResultBytes
from shared import jobstore, webhooks
from shared.errors import JobNotFound, RateLimited
from shared.redisio import Arg, ScriptCall, text
from shared.replication import ReplicaWait, run_script_async
from shared.schemas import JobStatus, JobView

# A micro-batch of new jobs in one call. KEYS: the outbox, the webhooks' due set, then per job its
# record and its owner's listing index, then per charged owner its result-byte buckets (current
# first; `ResultBytes`), then the queue of the message to push, if one is given. ARGV: now, ttl,
# jobs, owners charged, buckets per owner, byte limit, the message ("": none), then per job: id,
# created_at, owner number (0: not charged), bytes, in outbox (0/1), has a callback (0/1), field
# count, then its field/value pairs. A job that would pass its owner's limit is not created;
# returns the refused as {id, owner's total, ...}. The message (carrying every job) is pushed
# only when none was refused: after the records, so a worker never pops it before they exist.
CREATE = """
local now, ttl = ARGV[1], ARGV[2]
local jobs, owners, width, limit = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5]),
  tonumber(ARGV[6])
local message = ARGV[7]
local first_bucket = 2 + 2 * jobs
local totals, added = {}, {}
for o = 1, owners do
  local from = first_bucket + (o - 1) * width
  local total = 0
  for _, value in ipairs(redis.call('MGET', unpack(KEYS, from + 1, from + width))) do
    total = total + (tonumber(value) or 0)
  end
  totals[o], added[o] = total, 0
end
local refused, a = {}, 8
for j = 1, jobs do
  local id, created, o, size = ARGV[a], ARGV[a + 1], tonumber(ARGV[a + 2]), tonumber(ARGV[a + 3])
  local outbox, callback, n = ARGV[a + 4], ARGV[a + 5], tonumber(ARGV[a + 6])
  local fields = a + 7
  a = fields + n
  if o > 0 and totals[o] + size > limit then
    table.insert(refused, id)
    table.insert(refused, totals[o])
  else
    if o > 0 then
      totals[o], added[o] = totals[o] + size, added[o] + size
    end
    local record, index = KEYS[2 * j + 1], KEYS[2 * j + 2]
    redis.call('HSET', record, unpack(ARGV, fields, a - 1))
    redis.call('EXPIRE', record, ttl)
    redis.call('ZADD', index, created, id)
    redis.call('EXPIRE', index, ttl)
    if outbox == '1' then
      redis.call('ZADD', KEYS[1], now, id)
    end
    if callback == '1' then
      redis.call('ZADD', KEYS[2], now, id)
    end
  end
end
redis.call('EXPIRE', KEYS[1], ttl)
for o = 1, owners do
  if added[o] > 0 then
    local bucket = KEYS[first_bucket + (o - 1) * width + 1]
    redis.call('INCRBY', bucket, added[o])
    redis.call('EXPIRE', bucket, ttl)
  end
end
if message ~= '' and #refused == 0 then
  redis.call('LPUSH', KEYS[#KEYS], message)
end
return refused
"""


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
        commands: AutoPipeline | None = None,
    ) -> None:
        self.redis = redis
        self.commands = commands or AutoPipeline(redis)
        self.ttl = ttl
        self.admins = frozenset(admins)
        self.wait = wait  # Sentinel: records and outbox entries count only once replicated
        self._cancel = redis.register_script(jobstore.CANCEL)
        self._create = redis.register_script(CREATE)

    async def create_many(
        self,
        records: list[dict[str, str]],
        outbox: dict[str, tuple[str, bytes]] | None = None,
        charge: ResultBytes | None = None,
        push: tuple[str, bytes] | None = None,
    ) -> dict[str, RateLimited]:
        """Write new jobs' records with their TTL, and index them for listing, in one script
        call. Jobs in `outbox` (job id -> model spec, rows as JSON) also keep what it takes to
        send them again until they start. With `charge`, each job's `n_rows` results count
        against its owner's stored bytes, and a job over the limit is not created: returns
        those, with the 429 each gets. With `push` (queue, task message), the same call pushes
        the message when no job was refused (the caller sends its own otherwise). With a
        `ReplicaWait`, `NotReplicated` unless a replica has them all (one WAIT per call, hence
        one per micro-batch)."""
        call = _create_call(records, outbox or {}, self.ttl, charge, push)
        what = f"{len(records)} new job(s)"
        reply = await run_script_async(self.redis, self.wait, self._create, call, what)
        if charge is None:
            return {}
        sizes = {r["id"]: ResultBytes.size(int(r.get("n_rows", 0))) for r in records}
        pairs = iter(reply)  # job id, the owner's total, ...
        return {
            text(job_id): charge.refusal(int(total), sizes[text(job_id)])
            for job_id, total in zip(pairs, pairs, strict=True)
        }

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
    ) -> tuple[JobView, list[list[float]] | None, str | None]:
        """The job's view, the rows it was submitted with (while they are kept) and its
        `callback_url` (None without one)."""
        fields = await self._fields(job_id, owner, (*jobstore.VIEW_FIELDS, "rows", "callback_url"))
        rows = jobstore.input_rows(fields)
        callback = fields.pop("callback_url", None)
        return jobstore.to_view(job_id, fields), rows, text(callback) or None

    async def cancel(self, job_id: str, owner: str) -> JobStatus:
        """Cancel a live job; returns the status it had before (final ones are left alone)."""
        await self._fields(job_id, owner, ("status",))
        call = jobstore.cancel_call(job_id)
        previous = jobstore.previous_status(await self._cancel(keys=call.keys, args=call.args))
        if previous is None:
            raise JobNotFound(f"job {job_id} not found", job_id=job_id)
        return previous

    async def _fields(self, job_id: str, owner: str, names: tuple[str, ...]) -> dict[str, Any]:
        # Concurrent reads share one pipeline per event-loop turn (see `gateway.autopipe`).
        values = await self.commands.execute("HMGET", jobstore.job_key(job_id), *names, "owner")
        fields = dict(zip((*names, "owner"), values, strict=True))
        stored_owner = text(fields.pop("owner"))
        # Someone else's job is reported exactly like a missing one, so ids do not leak.
        if fields.get("status") is None or not self.may_see(stored_owner, owner):
            raise JobNotFound(f"job {job_id} not found", job_id=job_id)
        return fields

    def may_see(self, stored_owner: str, owner: str) -> bool:
        """Whether `owner` may see a job stored with `stored_owner`."""
        if stored_owner:
            return stored_owner == owner
        return owner == "" or owner in self.admins


def _create_call(
    records: list[dict[str, str]],
    outbox: dict[str, tuple[str, bytes]],
    ttl: int,
    charge: ResultBytes | None,
    push: tuple[str, bytes] | None = None,
) -> ScriptCall:
    """`CREATE` for `records` (see there)."""
    owners: dict[str, int] = {}  # charged owner -> its number in the call, from 1
    keys: list[str] = [jobstore.PENDING, webhooks.DUE]
    per_job: list[Arg] = []
    for record in records:
        job_id, owner = record["id"], record["owner"]
        keys += [jobstore.job_key(job_id), jobstore.owner_index_key(owner)]
        number = owners.setdefault(owner, len(owners) + 1) if charge is not None else 0
        size = ResultBytes.size(int(record.get("n_rows", 0)))
        fields: dict[str, str | bytes] = dict(record)
        if job_id in outbox:
            fields["spec"], fields["rows"] = outbox[job_id]
        flat = [item for pair in fields.items() for item in pair]
        callback = "1" if record.get("callback_url") else "0"
        sends = "1" if job_id in outbox else "0"
        per_job += [job_id, record["created_at"], number, size, sends, callback, len(flat), *flat]
    width = 0
    for owner in owners:
        buckets = charge.buckets(owner) if charge is not None else []
        keys += buckets
        width = len(buckets)
    limit = charge.limit if charge is not None else 0
    message: bytes = b""
    if push is not None:
        queue, message = push
        keys.append(queue)
    head: list[Arg] = [time.time(), ttl, len(records), len(owners), width, limit, message]
    return ScriptCall(keys, [*head, *per_job])
