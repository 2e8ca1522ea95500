"""`GET /v1/jobs/{id}/events`: SSE `status` events per change, resume, bound per key."""

from __future__ import annotations

import json
import threading
import time

import fakeredis
import pytest
from fastapi.testclient import TestClient

from shared.jobstore import PREFIX
from shared.settings import Settings
from tests.unit.conftest import FakePublisher
from worker.csv_chunks import score_chunk

ROW = [0.01 * i for i in range(10)]
HEADER = b"age,sex,bmi,bp,s1,s2,s3,s4,s5,s6\n"
LINE = b"0.1,0.2,0.3,0.4,0.5,0.6,0.7,0.8,0.9,1.0\n"


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(
        update={
            "csv_chunk_rows": 2,
            "events_poll_seconds": 0.02,
            "events_heartbeat_seconds": 0.05,
            "max_event_streams_per_key": 2,
        }
    )


def read_events(
    client: TestClient, job_id: str, sink: list[dict[str, str]] | None = None, **headers: str
) -> list[dict[str, str]]:
    """Every event of a stream (it ends by itself), as {"event", "id", "data"}, also appended
    to `sink` as they arrive."""
    events = [] if sink is None else sink
    current: dict[str, str] = {}
    with client.stream("GET", f"/v1/jobs/{job_id}/events", headers=headers) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            if not line:
                if "data" in current:
                    events.append(current)
                current = {}
            elif not line.startswith(":"):
                name, _, value = line.partition(": ")
                current[name] = value
    return events


def test_a_finished_job_streams_its_final_state_then_ends(client: TestClient) -> None:
    job_id = client.post("/v1/jobs", json={"data": [ROW]}).json()["job_id"]
    events = read_events(client, job_id)
    assert [e["event"] for e in events] == ["status"]
    view = json.loads(events[0]["data"])
    assert view == client.get(f"/v1/jobs/{job_id}").json()
    assert view["status"] == "succeeded"


def test_progress_is_streamed_to_the_end_and_resumes(
    client: TestClient, publisher: FakePublisher
) -> None:
    publisher.run = False
    job_id = client.post(
        "/v1/jobs/csv", files={"file": ("d.csv", HEADER + LINE * 6, "text/csv")}
    ).json()["job_id"]
    sent = list(publisher.sent)
    events: list[dict[str, str]] = []
    reader = threading.Thread(target=read_events, args=(client, job_id, events))
    reader.start()
    # Score the three chunks one by one, each once the stream has shown the state before it.
    for seen, message in enumerate(sent, start=1):
        for _ in range(500):  # bounded: 10 s
            if events and json.loads(events[-1]["data"])["progress"]["chunks_done"] == seen - 1:
                break
            threading.Event().wait(0.02)
        score_chunk(publisher.runtime, **message["kwargs"])
    reader.join(timeout=10)
    assert not reader.is_alive()
    views = [json.loads(e["data"]) for e in events]
    done = [v["progress"]["chunks_done"] for v in views]
    assert sorted(set(done)) == [0, 1, 2, 3] and done == sorted(done)  # every step, in order
    assert views[-1]["status"] == "succeeded" and views[-1]["progress"]["percent"] == 100.0
    assert len({e["id"] for e in events}) == len(events)
    # Resuming from the last event: nothing new, and the stream ends at once.
    assert read_events(client, job_id, **{"Last-Event-ID": events[-1]["id"]}) == []
    # Resuming from an earlier event: the current state again (it differs from that one).
    resumed = read_events(client, job_id, **{"Last-Event-ID": events[1]["id"]})
    assert [json.loads(e["data"]) for e in resumed] == views[-1:]


def test_unknown_job_is_a_404_before_streaming(client: TestClient) -> None:
    response = client.get("/v1/jobs/nope/events")
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"


def test_streams_are_bounded_per_key(client: TestClient, publisher: FakePublisher) -> None:
    publisher.run = False
    job_id = client.post("/v1/jobs", json={"data": [ROW]}).json()["job_id"]
    streams = [client.stream("GET", f"/v1/jobs/{job_id}/events") for _ in range(2)]
    opened = [s.__enter__() for s in streams]
    try:
        assert [r.status_code for r in opened] == [200, 200]
        refused = client.get(f"/v1/jobs/{job_id}/events")
        assert refused.status_code == 429 and "too many open event streams" in refused.text
    finally:
        assert client.delete(f"/v1/jobs/{job_id}").status_code == 200  # ends both streams
        for s in streams:
            s.__exit__(None, None, None)
    publisher.run = True
    assert read_events(client, job_id)[0]["data"].count('"cancelled"') == 1


def test_an_idle_stream_sends_heartbeat_comments(
    client: TestClient, publisher: FakePublisher
) -> None:
    publisher.run = False
    job_id = client.post("/v1/jobs", json={"data": [ROW]}).json()["job_id"]
    comments = 0
    with client.stream("GET", f"/v1/jobs/{job_id}/events") as response:
        for line in response.iter_lines():
            comments += line.startswith(":")
            if comments == 2:
                break
    assert comments == 2


def test_the_bound_counts_streams_of_every_gateway_process(
    client: TestClient, publisher: FakePublisher, server: fakeredis.FakeServer
) -> None:
    redis = fakeredis.FakeRedis(server=server)
    slots = f"{PREFIX}:quota:event-streams:"  # the keyless owner's
    job_id = client.post("/v1/jobs", json={"data": [ROW]}).json()["job_id"]
    redis.zadd(slots, {"other-gateway-0": time.time() + 60, "other-gateway-1": time.time() + 60})
    refused = client.get(f"/v1/jobs/{job_id}/events")
    assert refused.status_code == 429 and "too many open event streams" in refused.text
    redis.zadd(slots, {"other-gateway-1": time.time() - 1})  # that gateway died: lease over
    assert read_events(client, job_id)[-1]["data"].count('"succeeded"') == 1
    # The stream gave its slot back when it ended; the other gateway's is still held.
    assert redis.zrange(slots, 0, -1) == [b"other-gateway-0"]
    redis.delete(slots)
