"""A CSV job's record outlives a slow upload and its chunk keys never outlive the record, on a
real Redis with a TTL of two seconds (the scripts are what keeps the TTLs, so they are run as
the gateway and the worker run them)."""

from __future__ import annotations

import struct
import time
import uuid
from collections.abc import Iterator

import pytest
from redis import Redis

from shared import csvjobs, jobstore
from shared.redisio import ScriptCall
from tests.integration.conftest import _redis

pytestmark = pytest.mark.integration
TTL = 2


@pytest.fixture(scope="module")
def redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Redis]:
    proc, url = _redis(tmp_path_factory.mktemp("ttl-redis"), db_offset=3)
    client = Redis.from_url(url)
    try:
        yield client
    finally:
        client.close()
        if proc is not None:
            proc.terminate()
            proc.wait(10)


def run(redis: Redis, script: str, call: ScriptCall) -> str:
    reply = redis.register_script(script)(keys=call.keys, args=call.args)
    return reply.decode() if isinstance(reply, bytes) else str(reply)


def store_and_score(redis: Redis, job_id: str, index: int) -> str:
    key, data = csvjobs.chunk_data(job_id, index, b"1,2\n")
    redis.set(key, data, ex=TTL)
    stored = csvjobs.store_chunk_call(job_id, index, len(data), b"{}", TTL)
    assert run(redis, csvjobs.STORE_CHUNK, stored) == "stored"
    predictions = struct.pack("<d", float(index))
    done = csvjobs.chunk_done_call(
        job_id, index, rows=1, predictions=predictions, ids=b"", errors=b"", ttl=TTL
    )
    return run(redis, csvjobs.CHUNK_DONE, done)


def test_a_csv_job_slower_than_its_ttl_keeps_its_record_and_leaves_no_orphan_keys(
    redis: Redis,
) -> None:
    job_id = str(uuid.uuid4())
    key = jobstore.job_key(job_id)
    record = jobstore.new_record(job_id, kind="csv", model="demo", n_rows=None)
    redis.hset(key, mapping={**record, "chunks_done": "0", "chunks_sent": "0", "rows_done": "0"})
    redis.expire(key, TTL)
    # Three chunks over about 3 s: longer than the TTL the record got at upload start.
    for index in range(3):
        assert store_and_score(redis, job_id, index) == "running"
        time.sleep(1.0)
    assert redis.exists(key), "the record expired while its job was still running"
    finalize = csvjobs.finalize_call(job_id, chunks=3, rows=3, ttl=TTL)
    assert run(redis, csvjobs.FINALIZE, finalize) == "succeeded"
    # Every chunk's predictions are there for the whole TTL after the job succeeded.
    assert redis.exists(*(csvjobs.out_key(job_id, i) for i in range(3))) == 3
    assert 0 < redis.ttl(csvjobs.out_key(job_id, 0)) <= TTL
    # Then everything of the job goes at once: no key outlives the record.
    time.sleep(TTL + 1.0)
    assert list(redis.scan_iter(f"{key}*")) == []
