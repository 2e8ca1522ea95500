"""The job store: one Redis hash per job, changed only by atomic scripts.

Celery's own state cannot say "unknown id" (everything unknown is PENDING) and cannot be cancelled
by a client, so the service keeps its own record. The gateway writes it at submit; the worker moves
it to running and to a final state; a task enqueued directly (no record yet) gets one when a worker
starts it. Every final transition publishes the job id on `EVENTS` so long polls wake at once.
Final states are sticky: a redelivered or duplicate run cannot overwrite a result or a cancel.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Final, NamedTuple

import orjson

from shared.redisio import Arg, ScriptCall, text
from shared.schemas import JobError, JobStatus, JobView, Progress, WebhookState

PREFIX: Final = "mlqueue"
# Messages: a line per job that ended, its id alone or, for a success, `id<TAB>owner<TAB>model
# <TAB>version<TAB>predictions` (see `Announced`, `ended`).
EVENTS: Final = f"{PREFIX}:events"
ANNOUNCED_MAX_BYTES: Final = 4096
"""The largest answer (JSON bytes, ~200 predictions) sent with its job's `EVENTS` line: every
gateway process receives every line, so large answers are read from the store by whoever waits."""
WORKERS: Final = f"{PREFIX}:workers"  # sorted set: worker node name -> time of its last heartbeat
# Outbox: sorted set of gateway jobs not yet started, by the time their message was last sent.
# Their records keep the rows and the model until a worker starts them, so that a message lost
# by the broker (Redis crashing between a worker's pop and its bookkeeping) can be sent again.
PENDING: Final = f"{PREFIX}:pending"
# Sorted set of jobs running, by the time they (last) started: what `worker.reaper` watches for
# jobs whose outcome was never stored. Their records keep the rows and the model until they end
# (the peak is unchanged: a queued job holds them too), so that such a job can be sent again.
RUNNING: Final = f"{PREFIX}:running"
TOO_MANY_ATTEMPTS: Final = "TooManyAttempts"


def job_key(job_id: str) -> str:
    """The Redis key of a job's record."""
    return f"{PREFIX}:job:{job_id}"


def owner_index_key(owner: str) -> str:
    """The sorted set of an owner's gateway jobs (job id -> creation time), for listing.
    Jobs enqueued directly with Celery have no owner and are not indexed."""
    return f"{PREFIX}:owner:{owner or '-'}:jobs"


# Starting a job: `fresh` are the field/value pairs to set when the record is missing (a direct
# task). Returns the status the caller should act on: "running" to go on, anything else to stop.
# A started job leaves the outbox: its message has arrived. Every start counts as an attempt:
# past the maximum (a job whose outcome could never be stored, redelivered again and again) the
# job fails instead. A gateway job's `rows`/`spec` stay on the record: the reaper re-sends a
# stuck running job from them, and a failed or cancelled job can be retried from them (FINISH
# drops them on success).
_START_ONE = """
local function start_one(job, outbox, running, now, ttl, id, max_attempts, channel, fresh)
  local status = redis.call('HGET', job, 'status')
  if not status then
    redis.call('HSET', job, unpack(fresh))
    status = 'queued'
  end
  redis.call('ZREM', outbox, id)
  if status ~= 'queued' and status ~= 'running' then
    return status
  end
  redis.call('EXPIRE', job, ttl)
  local attempts = redis.call('HINCRBY', job, 'attempts', 1)
  if attempts > max_attempts then
    redis.call('HSET', job, 'status', 'failed', 'finished_at', now,
      'error_type', 'TooManyAttempts', 'error', 'the job was started ' .. (attempts - 1) ..
      ' times and its outcome never stored (a worker or Redis failed each time); giving up')
    redis.call('ZREM', running, id)
    redis.call('PUBLISH', channel, id)
    return 'failed'
  end
  redis.call('HSET', job, 'status', 'running', 'started_at', now)
  redis.call('ZADD', running, now, id)
  redis.call('EXPIRE', running, ttl)
  return 'running'
end
"""

# KEYS[1] job, KEYS[2] the outbox, KEYS[3] running; ARGV: now, ttl, job id, max attempts,
# channel, then the fresh record's field/value pairs.
START = (
    _START_ONE
    + """
return start_one(KEYS[1], KEYS[2], KEYS[3], ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4]),
  ARGV[5], {unpack(ARGV, 6)})
"""
)

# The jobs of one batch message. KEYS[1] the outbox, KEYS[2] running, then the jobs' records;
# ARGV: now, ttl, max attempts, channel, model, then per job its id and row count. Returns the
# statuses in order. A batch's jobs share everything but id and size: sent once, not per job.
START_MANY = (
    _START_ONE
    + """
local now, ttl, max_attempts, channel, model = ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4],
  ARGV[5]
local statuses = {}
for i = 3, #KEYS do
  local id, n_rows = ARGV[2 * i], ARGV[2 * i + 1]
  local fresh = {'id', id, 'kind', 'task', 'model', model, 'n_rows', n_rows, 'created_at', now,
    'owner', ''}
  statuses[i - 2] = start_one(KEYS[i], KEYS[1], KEYS[2], now, ttl, id, max_attempts, channel,
    fresh)
end
return statuses
"""
)

# Finishing a job with `status` and its field/value pairs `fields`. Writes only over a live job,
# so a duplicate cannot change a finished one. A succeeded job needs its rows no more; a failed
# one keeps them for a retry (the reaper reads only running jobs, the resender only queued
# ones). `channel` "": the caller publishes.
_FINISH_ONE = """
local function finish_one(job, running, now, ttl, status, channel, id, fields)
  redis.call('ZREM', running, id)
  local was = redis.call('HGET', job, 'status')
  if was == 'succeeded' or was == 'failed' or was == 'cancelled' then
    return was, false
  end
  redis.call('HSET', job, 'status', status, 'finished_at', now, unpack(fields))
  if status == 'succeeded' then
    redis.call('HDEL', job, 'rows', 'spec')  -- only failed or cancelled jobs can be retried
  end
  redis.call('EXPIRE', job, ttl)
  if channel ~= '' then
    redis.call('PUBLISH', channel, id)
  end
  return status, true
end
"""

# KEYS[1] job, KEYS[2] running; ARGV: now, ttl, final status, channel ("" = the caller
# publishes), job id, then field/value pairs.
FINISH = (
    _FINISH_ONE
    + """
local status = finish_one(KEYS[1], KEYS[2], ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5],
  {unpack(ARGV, 6)})
return status
"""
)

# The outcomes of one batch message. KEYS[1] running, then the jobs' records; ARGV: now, ttl,
# channel ("": the caller publishes), then per job: id, status, announce (1/0), field count,
# field/value pairs. Returns the final statuses in order and the `EVENTS` message: a line per job,
# for a success this call stored and was asked to announce the answer itself (see `Announced`).
FINISH_MANY = (
    _FINISH_ONE
    + """
local now, ttl, channel, a = ARGV[1], ARGV[2], ARGV[3], 4
local statuses, lines = {}, {}
for i = 2, #KEYS do
  local id, status, announce, n = ARGV[a], ARGV[a + 1], ARGV[a + 2], tonumber(ARGV[a + 3])
  local final, stored = finish_one(KEYS[i], KEYS[1], now, ttl, status, '', id,
    {unpack(ARGV, a + 4, a + 3 + n)})
  statuses[i - 1] = final
  lines[i - 1] = id
  if stored and final == 'succeeded' and announce == '1' then
    local f = redis.call('HMGET', KEYS[i], 'owner', 'model', 'version', 'result')
    lines[i - 1] = table.concat({id, f[1] or '', f[2] or '', f[3] or '', f[4]}, '\\t')
  end
  a = a + 4 + n
end
local message = table.concat(lines, '\\n')
if channel ~= '' then
  redis.call('PUBLISH', channel, message)
end
return {statuses, message}
"""
)

# KEYS[1] job; ARGV: now, channel, job id. Returns the status before the call (false if none).
CANCEL = """
local status = redis.call('HGET', KEYS[1], 'status')
if status == 'queued' or status == 'running' then
  -- The rows stay (until the record expires) so that the job can be retried.
  redis.call('HSET', KEYS[1], 'status', 'cancelled', 'finished_at', ARGV[1])
  redis.call('PUBLISH', ARGV[2], ARGV[3])
end
return status
"""


def start_call(job_id: str, *, model: str, n_rows: int, ttl: int, max_attempts: int) -> ScriptCall:
    """`START` for one job; the fields make a record for a task nobody submitted through the
    gateway (a direct enqueuer's)."""
    now = repr(time.time())
    fresh = {
        "id": job_id,
        "kind": "task",
        "model": model,
        "n_rows": str(n_rows),
        "created_at": now,
        "owner": "",
    }
    args: list[Arg] = [now, str(ttl), job_id, max_attempts, EVENTS, *_flatten(fresh)]
    return ScriptCall([job_key(job_id), PENDING, RUNNING], args)


def success_call(
    job_id: str, *, version: str, predictions: list[float], ttl: int, publish: bool = True
) -> ScriptCall:
    """`FINISH` for a succeeded job: its version and predictions."""
    fields: dict[str, str | bytes] = {"version": version, "result": orjson.dumps(predictions)}
    return _finish(job_id, JobStatus.SUCCEEDED, fields, ttl, publish)


def failure_call(
    job_id: str,
    *,
    error_type: str,
    message: str,
    ttl: int,
    publish: bool = True,
    errors: bytes = b"",
) -> ScriptCall:
    """`FINISH` for a failed job: its error, and a CSV job's bad lines (JSON) when given."""
    fields: dict[str, str | bytes] = {"error_type": error_type, "error": message}
    if errors:
        fields["errors"] = errors
    return _finish(job_id, JobStatus.FAILED, fields, ttl, publish)


def start_many_call(
    jobs: Sequence[tuple[str, int]], *, model: str, ttl: int, max_attempts: int
) -> ScriptCall:
    """`START_MANY` for the (job id, rows) pairs of one batch message."""
    args: list[Arg] = [repr(time.time()), str(ttl), max_attempts, EVENTS, model]
    for job_id, n_rows in jobs:
        args += [job_id, n_rows]
    return ScriptCall([PENDING, RUNNING, *(job_key(job_id) for job_id, _ in jobs)], args)


def finish_many_call(
    version: str,
    succeeded: Mapping[str, bytes],
    failed: Mapping[str, tuple[str, str]],
    *,
    ttl: int,
    publish: bool = True,
) -> ScriptCall:
    """`FINISH_MANY` for one batch: predictions (as JSON) per job id, (error type, message) per
    job id. `publish` False: the caller publishes the message the script returns."""
    args: list[Arg] = [repr(time.time()), str(ttl), EVENTS if publish else ""]
    for job_id, result in succeeded.items():
        announce = int(len(result) <= ANNOUNCED_MAX_BYTES and _one_line(job_id))
        args += [job_id, "succeeded", announce, 4, "version", version, "result", result]
    for job_id, (error_type, message) in failed.items():
        args += [job_id, "failed", 0, 4, "error_type", error_type, "error", message]
    return ScriptCall([RUNNING, *(job_key(job_id) for job_id in [*succeeded, *failed])], args)


def finished_message(reply: Any) -> bytes:
    """The `EVENTS` message a `FINISH_MANY` call returned (after its final statuses)."""
    _, message = reply
    return bytes(message)


class Announced(NamedTuple):
    """A JSON job's success as its `EVENTS` line carries it: enough to answer a waiter without
    reading the job back (one Redis round trip less per `/predict` and per long poll)."""

    owner: str
    model: str
    version: str
    predictions: bytes  # the JSON array stored as the job's result


def ended(message: bytes) -> Iterator[tuple[str, Announced | None]]:
    """The jobs an `EVENTS` message says ended: each id, with its answer when announced."""
    for line in message.split(b"\n"):
        fields = line.split(b"\t")
        if len(fields) == 5:
            job_id, owner, model, version, predictions = fields
            yield (
                job_id.decode(),
                Announced(
                    owner.decode(), model.decode() or "default", version.decode(), predictions
                ),
            )
        else:  # a job id alone (a failure, a cancel, a CSV job, a large answer)
            yield line.decode(), None


def _one_line(value: str) -> bool:
    return "\t" not in value and "\n" not in value


def statuses_of(reply: object) -> list[JobStatus]:
    """The statuses a `START_MANY` call returned, in order."""
    return [JobStatus(text(s)) for s in reply] if isinstance(reply, list) else []


def cancel_call(job_id: str) -> ScriptCall:
    """`CANCEL` for one job."""
    return ScriptCall([job_key(job_id)], [repr(time.time()), EVENTS, job_id])


def status_of(reply: object) -> JobStatus:
    """The status a `START` or `FINISH` call returned."""
    return JobStatus(text(reply))


def input_rows(fields: Mapping[str, Any]) -> list[list[float]] | None:
    """A JSON job's rows as kept on its record (`rows`, until it succeeds); None once it
    succeeded or for jobs that never had any (CSV, direct tasks)."""
    raw = fields.get("rows")
    return orjson.loads(raw) if raw else None


def previous_status(reply: object) -> JobStatus | None:
    """The status a `CANCEL` call found: None when the job does not exist."""
    return JobStatus(text(reply)) if reply else None


def _finish(
    job_id: str, status: JobStatus, fields: dict[str, str | bytes], ttl: int, publish: bool
) -> ScriptCall:
    args: list[Arg] = [repr(time.time()), str(ttl), status.value, EVENTS if publish else ""]
    return ScriptCall([job_key(job_id), RUNNING], [*args, job_id, *_flatten(fields)])


VIEW_FIELDS: Final = (
    "status",
    "kind",
    "model",
    "version",
    "n_rows",
    "created_at",
    "started_at",
    "finished_at",
    "error_type",
    "error",
    "owner",
    "rows_done",
    "rows_total",
    "chunks_done",
    "chunks_total",
    "rows_skipped",
    "retry_of",
    "priority",
    "webhook_state",
    "webhook_attempts",
    "webhook_last_status",
)


def new_record(
    job_id: str, *, kind: str, model: str, n_rows: int | None, owner: str = ""
) -> dict[str, str]:
    """The fields of a freshly submitted job."""
    record = {
        "id": job_id,
        "status": JobStatus.QUEUED.value,
        "kind": kind,
        "model": model,
        "created_at": repr(time.time()),
        "owner": owner,
    }
    if n_rows is not None:
        record["n_rows"] = str(n_rows)
    return record


def to_view(job_id: str, values: Mapping[str, Any]) -> JobView:
    """Build the client's view of a job from its hash fields (strings or bytes)."""
    f = {k: text(v) for k, v in values.items() if v is not None}
    error = (
        JobError(type=f["error_type"], message=f.get("error", "")) if "error_type" in f else None
    )
    return JobView(
        job_id=job_id,
        status=JobStatus(f["status"]),
        kind=f.get("kind", "json"),
        model=f.get("model", "default"),
        version=f.get("version"),
        n_rows=_int(f.get("n_rows")),
        created_at=_time(f.get("created_at")),
        started_at=_time(f.get("started_at")),
        finished_at=_time(f.get("finished_at")),
        error=error,
        progress=_progress(f),
        retry_of=f.get("retry_of"),
        priority=f.get("priority", "normal"),
        webhook=_webhook(f),
    )


def _webhook(f: Mapping[str, str]) -> WebhookState | None:
    if "webhook_state" not in f:
        return None
    last = f.get("webhook_last_status")
    return WebhookState(
        state=f["webhook_state"],
        attempts=int(f.get("webhook_attempts", 0)),
        last_status=int(last) if last else None,
    )


def _progress(f: Mapping[str, str]) -> Progress | None:
    if "chunks_done" not in f:
        return None
    done, total = int(f.get("rows_done", 0)), _int(f.get("rows_total"))
    percent = round(100.0 * done / total, 1) if total else (100.0 if total == 0 else None)
    return Progress(
        rows_done=done,
        rows_total=total,
        chunks_done=int(f["chunks_done"]),
        chunks_total=_int(f.get("chunks_total")),
        percent=percent,
        rows_skipped=int(f.get("rows_skipped", 0)),
    )


def _flatten(mapping: Mapping[str, str | bytes]) -> list[Arg]:
    return [item for pair in mapping.items() for item in pair]


def _int(value: str | None) -> int | None:
    return int(value) if value else None


def _time(value: str | None) -> datetime | None:
    return None if not value else datetime.fromtimestamp(float(value), tz=UTC)
