"""Bulk CSV jobs in Redis: chunk keys, the scripts that move them, the chunk task's arguments.

A CSV job is a job record (`shared.jobstore`) plus, per chunk `i`, these keys (all with a TTL):
`<job>:in:<i>` the chunk's raw bytes until scored, `<job>:out:<i>` its predictions as float64
little-endian bytes, `<job>:ids:<i>` its ids (JSON list, when an id column was named),
`<job>:err:<i>` the lines it skipped (JSON list, with on_error=skip), and one set `<job>:done` of
the scored chunk indices. Scoring a chunk is recorded by `CHUNK_DONE` keyed by the chunk's index,
so a chunk delivered twice (a worker died after scoring it) is counted once and rows are neither
duplicated nor dropped. The job succeeds when `chunks_done` reaches `chunks_total`, which the
gateway sets when the upload ends (`FINALIZE`); whichever of the two comes last completes it.
Chunk keys are only written while the job is queued or running, so a cancel or a failure can
delete them once and for all.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import asdict
from typing import Final, Literal, cast

from shared.csvformat import Layout
from shared.jobstore import EVENTS, PREFIX, job_key
from shared.redisio import Arg, ScriptCall, text
from shared.schemas import JobStatus
from shared.tasks import LayoutDict, ScoreChunkKwargs

ON_ERROR: Final = ("fail", "skip")
PENDING_CHUNKS: Final = f"{PREFIX}:pending-chunks"
"""Outbox of chunks sent but not yet begun: member `<job id>:<index>`, score the send time."""
RUNNING_CHUNKS: Final = f"{PREFIX}:running-chunks"
"""Chunks begun but not yet scored: member `<job id>:<index>`, score the time they began. A chunk
keeps its task's arguments (`msg_key`) until scored, so `worker.reaper` can send it again."""
MAX_SKIP_REPORT: Final = 100
"""Skipped lines listed per chunk (the count is always exact)."""
PURGE_BATCH: Final = 500
"""Keys per `DEL` when a job's chunk data is deleted."""

WAITING_CHUNKS: Final = f"{PREFIX}:waiting-chunks"
"""Chunks stored and not yet scored, all jobs together: member `<job id>:<index>:<bytes>`, score
the time their data expires; what `gateway.quotas` adds up against `max_waiting_chunk_bytes`."""

ChunkOutcome = JobStatus | Literal["stored", "done", "duplicate", "missing", "exhausted"]
"""What a chunk script answers: the job's status, or one of the extra outcomes ("stored": the
chunk was stored; "done": it was scored before; "duplicate": its result was recorded before;
"missing": the job's record is gone; "exhausted": the chunk was begun `max_attempts` times)."""
_EXTRA_OUTCOMES: Final = ("stored", "done", "duplicate", "missing", "exhausted")


def in_key(job_id: str, index: int) -> str:
    """Raw bytes of chunk `index`, until it is scored."""
    return f"{job_key(job_id)}:in:{index}"


def out_key(job_id: str, index: int) -> str:
    """Predictions of chunk `index`: float64 little-endian."""
    return f"{job_key(job_id)}:out:{index}"


def ids_key(job_id: str, index: int) -> str:
    """Ids of chunk `index` (a JSON list of strings)."""
    return f"{job_key(job_id)}:ids:{index}"


def err_key(job_id: str, index: int) -> str:
    """Lines chunk `index` skipped (a JSON list of {line, column, name, msg})."""
    return f"{job_key(job_id)}:err:{index}"


def msg_key(job_id: str, index: int) -> str:
    """The arguments of chunk `index`'s task (JSON), kept until a worker begins the chunk, so
    that a message lost by the broker can be sent again (see `worker.resender`)."""
    return f"{job_key(job_id)}:msg:{index}"


def pending_member(job_id: str, index: int) -> str:
    """The chunk's member in the chunk outbox, `PENDING_CHUNKS`."""
    return f"{job_id}:{index}"


def waiting_member(job_id: str, index: int, size: int) -> str:
    """The chunk's member in `WAITING_CHUNKS`."""
    return f"{job_id}:{index}:{size}"


def done_key(job_id: str) -> str:
    """The set of scored chunk indices."""
    return f"{job_key(job_id)}:done"


def purge_batches(job_id: str, chunks_sent: int) -> Iterator[list[str]]:
    """Every data key of a job that stored `chunks_sent` chunks, in batches for `DEL`: what a
    cancel, a failure or an aborted upload deletes once the job has ended."""
    keys = [done_key(job_id)]
    for i in range(chunks_sent):
        keys += [in_key(job_id, i), out_key(job_id, i), ids_key(job_id, i), err_key(job_id, i)]
        keys.append(msg_key(job_id, i))
        if len(keys) >= PURGE_BATCH:
            yield keys
            keys = []
    if keys:
        yield keys


def task_kwargs(
    job_id: str, index: int, first_line: int, rows: int, model: str, layout: Layout, on_error: str
) -> ScoreChunkKwargs:
    """The JSON arguments of `mlqueue.score_chunk` (see `shared.tasks`)."""
    return {
        "job_id": job_id,
        "index": index,
        "first_line": first_line,
        "rows": rows,
        "model": model,
        "layout": cast(LayoutDict, asdict(layout)),
        "on_error": on_error,
    }


def layout_from(value: LayoutDict) -> Layout:
    """A `Layout` back from its JSON form."""
    return Layout(**value)


# KEYS[1] job, KEYS[2] in:<i>, KEYS[3] msg:<i>, KEYS[4] the chunk outbox, KEYS[5] done,
# KEYS[6] waiting chunks; ARGV: ttl, task arguments (JSON), outbox member, now, waiting member.
# The chunk's bytes are already in in:<i> (`chunk_data`, just before, with the same TTL): they
# are deleted if the job ended. "stored", else the job's status (or "missing"). The record and
# its set are renewed with every key written beside them, so a job slower than the TTL keeps its
# record, and nothing of it outlives its record.
STORE_CHUNK = """
local status = redis.call('HGET', KEYS[1], 'status')
if status ~= 'queued' and status ~= 'running' then
  redis.call('DEL', KEYS[2])
  return status or 'missing'
end
redis.call('SET', KEYS[3], ARGV[2], 'EX', ARGV[1])
redis.call('ZADD', KEYS[4], ARGV[4], ARGV[3])
redis.call('EXPIRE', KEYS[4], ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[1])
redis.call('EXPIRE', KEYS[5], ARGV[1])
redis.call('ZADD', KEYS[6], tonumber(ARGV[4]) + tonumber(ARGV[1]), ARGV[5])
redis.call('EXPIRE', KEYS[6], ARGV[1])
redis.call('HINCRBY', KEYS[1], 'chunks_sent', 1)
return 'stored'
"""

# The scored chunks' results are renewed with the record, so that a job slower than the TTL
# still has the predictions of its first chunks at the end: at most every third of the TTL while
# chunks complete (a loop over the scored chunks), and once more when the job succeeds. Key names
# are built here: mlqueue uses one Redis, not a cluster.
_RENEW_RESULTS = """
local function renew_results(job, done, ttl, now, force)
  local last = tonumber(redis.call('HGET', job, 'renewed_at') or '0')
  if not force and tonumber(now) - last < tonumber(ttl) / 3 then
    return
  end
  redis.call('HSET', job, 'renewed_at', now)
  for _, i in ipairs(redis.call('SMEMBERS', done)) do
    redis.call('EXPIRE', job .. ':out:' .. i, ttl)
    redis.call('EXPIRE', job .. ':ids:' .. i, ttl)
    redis.call('EXPIRE', job .. ':err:' .. i, ttl)
  end
end
"""

# KEYS[1] job, KEYS[2] done, KEYS[3] the chunk outbox, KEYS[4] running chunks; ARGV: index,
# now, member, max attempts, ttl. "running" to score, "done" if already scored, "exhausted" once
# begun too often, else the job's status ("missing" when it expired). The chunk's message has
# arrived: it leaves the outbox, and is watched as running until scored.
CHUNK_BEGIN = """
redis.call('ZREM', KEYS[3], ARGV[3])
local status = redis.call('HGET', KEYS[1], 'status')
if status ~= 'queued' and status ~= 'running' then
  redis.call('ZREM', KEYS[4], ARGV[3])
  return status or 'missing'
end
if redis.call('SISMEMBER', KEYS[2], ARGV[1]) == 1 then
  redis.call('ZREM', KEYS[4], ARGV[3])
  return 'done'
end
if redis.call('HINCRBY', KEYS[1], 'attempts:' .. ARGV[1], 1) > tonumber(ARGV[4]) then
  redis.call('ZREM', KEYS[4], ARGV[3])
  return 'exhausted'
end
if status == 'queued' then
  redis.call('HSET', KEYS[1], 'status', 'running', 'started_at', ARGV[2])
end
redis.call('ZADD', KEYS[4], ARGV[2], ARGV[3])
redis.call('EXPIRE', KEYS[4], ARGV[5])
return 'running'
"""

# KEYS: job, done, in, out, ids, err, msg, running chunks, waiting chunks; ARGV: index, rows,
# scored, skipped, predictions, ids, errors, ttl, now, channel, job id, member. Returns the
# job's status after the call, or "duplicate".
CHUNK_DONE = (
    _RENEW_RESULTS
    + """
local status = redis.call('HGET', KEYS[1], 'status')
if status ~= 'queued' and status ~= 'running' then
  return status or 'missing'
end
if redis.call('SADD', KEYS[2], ARGV[1]) == 0 then
  return 'duplicate'
end
redis.call('EXPIRE', KEYS[1], ARGV[8])
redis.call('EXPIRE', KEYS[2], ARGV[8])
redis.call('SET', KEYS[4], ARGV[5], 'EX', ARGV[8])
if ARGV[6] ~= '' then redis.call('SET', KEYS[5], ARGV[6], 'EX', ARGV[8]) end
if ARGV[7] ~= '' then redis.call('SET', KEYS[6], ARGV[7], 'EX', ARGV[8]) end
local size = redis.call('STRLEN', KEYS[3])
redis.call('ZREM', KEYS[9], ARGV[11] .. ':' .. ARGV[1] .. ':' .. size)
redis.call('DEL', KEYS[3], KEYS[7])
redis.call('ZREM', KEYS[8], ARGV[12])
local done = redis.call('HINCRBY', KEYS[1], 'chunks_done', 1)
redis.call('HINCRBY', KEYS[1], 'rows_done', ARGV[2])
local scored = redis.call('HINCRBY', KEYS[1], 'rows_scored', ARGV[3])
redis.call('HINCRBY', KEYS[1], 'rows_skipped', ARGV[4])
local total = redis.call('HGET', KEYS[1], 'chunks_total')
if total and tonumber(total) == done then
  redis.call('HSET', KEYS[1], 'status', 'succeeded', 'finished_at', ARGV[9], 'n_rows', scored)
  renew_results(KEYS[1], KEYS[2], ARGV[8], ARGV[9], true)
  redis.call('PUBLISH', ARGV[10], ARGV[11])
  return 'succeeded'
end
renew_results(KEYS[1], KEYS[2], ARGV[8], ARGV[9], false)
return 'running'
"""
)

# KEYS[1] job, KEYS[2] done; ARGV: chunks_total, rows_total, now, channel, job id, ttl. The
# job's status after.
FINALIZE = (
    _RENEW_RESULTS
    + """
local status = redis.call('HGET', KEYS[1], 'status')
if status ~= 'queued' and status ~= 'running' then
  return status or 'missing'
end
redis.call('HSET', KEYS[1], 'chunks_total', ARGV[1], 'rows_total', ARGV[2])
redis.call('EXPIRE', KEYS[1], ARGV[6])
redis.call('EXPIRE', KEYS[2], ARGV[6])
local done = tonumber(redis.call('HGET', KEYS[1], 'chunks_done') or '0')
if done == tonumber(ARGV[1]) then
  local scored = redis.call('HGET', KEYS[1], 'rows_scored') or '0'
  redis.call('HSET', KEYS[1], 'status', 'succeeded', 'finished_at', ARGV[3], 'n_rows', scored)
  renew_results(KEYS[1], KEYS[2], ARGV[6], ARGV[3], true)
  redis.call('PUBLISH', ARGV[4], ARGV[5])
  return 'succeeded'
end
renew_results(KEYS[1], KEYS[2], ARGV[6], ARGV[3], false)
return status
"""
)


# KEYS[1] waiting chunks; ARGV: job key, job id, chunks sent. Run before a job's chunk data is
# deleted: its chunks stop counting as waiting (sizes are read from the data itself).
FORGET_WAITING = """
for i = 0, tonumber(ARGV[3]) - 1 do
  local size = redis.call('STRLEN', ARGV[1] .. ':in:' .. i)
  if size > 0 then
    redis.call('ZREM', KEYS[1], ARGV[2] .. ':' .. i .. ':' .. size)
  end
end
return 0
"""

# KEYS[1] waiting chunks; ARGV: now. The bytes of chunks stored and not yet scored (expired
# ones are dropped first: their data is gone too).
WAITING_BYTES = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
local total = 0
for _, member in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  total = total + tonumber(string.match(member, ':(%d+)$'))
end
return total
"""


def forget_waiting_call(job_id: str, chunks_sent: int) -> ScriptCall:
    """`FORGET_WAITING` for a job whose chunk data is about to be deleted."""
    return ScriptCall([WAITING_CHUNKS], [job_key(job_id), job_id, chunks_sent])


def outcome(reply: object) -> ChunkOutcome:
    """A chunk script's reply, typed."""
    value = text(reply)
    return cast(ChunkOutcome, value) if value in _EXTRA_OUTCOMES else JobStatus(value)


def chunk_data(job_id: str, index: int, data: bytes) -> tuple[str, memoryview]:
    """The key and value of a chunk's bytes, written with a plain SET (and the chunk's TTL) just
    before `STORE_CHUNK`. Redis keeps a big SET argument as it is, where a script's argument is
    copied into Lua and out again: 0.28 against 0.7 s of Redis CPU per 200 MB of chunks
    (measured). A memoryview makes redis-py send the bytes as they are: hiredis would copy them
    into a new command buffer first, ~65 ms of the gateway's CPU per 10 MB chunk (profiled)."""
    return in_key(job_id, index), memoryview(data)


def store_chunk_call(
    job_id: str, index: int, size: int, task_kwargs: bytes, ttl: int
) -> ScriptCall:
    """`STORE_CHUNK`: the bookkeeping of a chunk of `size` bytes already SET (`chunk_data`),
    and its task's arguments (JSON) in the chunk outbox."""
    keys = [job_key(job_id), in_key(job_id, index), msg_key(job_id, index), PENDING_CHUNKS]
    keys += [done_key(job_id), WAITING_CHUNKS]
    member = pending_member(job_id, index)
    waiting = waiting_member(job_id, index, size)
    return ScriptCall(keys, [ttl, task_kwargs, member, time.time(), waiting])


def chunk_begin_call(job_id: str, index: int, *, max_attempts: int, ttl: int) -> ScriptCall:
    """`CHUNK_BEGIN`: a worker takes up chunk `index`."""
    keys = [job_key(job_id), done_key(job_id), PENDING_CHUNKS, RUNNING_CHUNKS]
    member = pending_member(job_id, index)
    return ScriptCall(keys, [index, repr(time.time()), member, max_attempts, ttl])


def chunk_done_call(
    job_id: str,
    index: int,
    *,
    rows: int,
    predictions: bytes,
    ids: bytes,
    errors: bytes,
    ttl: int,
) -> ScriptCall:
    """`CHUNK_DONE`: chunk `index` of `rows` lines was scored; `predictions` holds one float64
    per scored line (the others were skipped), `ids` and `errors` are JSON or empty."""
    scored = len(predictions) // 8
    keys = [
        job_key(job_id),
        done_key(job_id),
        in_key(job_id, index),
        out_key(job_id, index),
        ids_key(job_id, index),
        err_key(job_id, index),
        msg_key(job_id, index),
        RUNNING_CHUNKS,
        WAITING_CHUNKS,
    ]
    counts: list[Arg] = [index, rows, scored, rows - scored]
    args = [*counts, predictions, ids, errors, ttl, repr(time.time()), EVENTS, job_id]
    args.append(pending_member(job_id, index))
    return ScriptCall(keys, args)


def finalize_call(job_id: str, *, chunks: int, rows: int, ttl: int) -> ScriptCall:
    """`FINALIZE`: the upload ended with `chunks` chunks of `rows` lines in all."""
    keys = [job_key(job_id), done_key(job_id)]
    return ScriptCall(keys, [chunks, rows, repr(time.time()), EVENTS, job_id, ttl])
