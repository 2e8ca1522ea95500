"""Container drills under load: kill a worker, restart and pause Redis, restart the gateway.

Each drill checks every accepted job's result against the model and adds a row to the drill
table (test-artifacts/docker-drills.md). Recovery seconds, and when the survivor took over a
killed worker's messages, are reported, not asserted: speed is measured, never asserted in tests.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter

import httpx
import pytest

from tests.docker.conftest import DRILLS, Stack, run, wait_for
from tests.docker.jobs import csv_body, csv_result, random_rows, submit_csv
from tests.docker.load import CLIENT_TIMEOUT, Answer, Load

pytestmark = pytest.mark.timeout(300)


def docker(*args: str) -> str:
    return run(["docker", *args], 60)


def revive(stack: Stack, container: str) -> None:
    """Start a killed container again (if its restart policy has not) and wait until ready."""
    if docker("inspect", "--format", "{{.State.Running}}", container).strip() != "true":
        docker("start", container)
    stack.wait_ready()


def takeovers(stack: Stack, since: float) -> list[tuple[float, int]]:
    """(wall time, messages) of each takeover of a dead node's messages logged after `since`."""
    found = []
    for line in stack.logs("worker").splitlines():
        _, _, record = line.partition("| ")
        if "took over a worker node's messages" not in record:
            continue
        event = json.loads(record)
        if event["ts"] >= since and event.get("reason", "").startswith("no heartbeat"):
            found.append((float(event["ts"]), int(event["messages"])))
    return found


def failover_note(stack: Stack, killed_at: float) -> str:
    moves = takeovers(stack, killed_at)
    if not moves:
        return "the victim held no message"
    first = min(t for t, _ in moves) - killed_at
    return f"survivor took over {sum(n for _, n in moves)} messages {first:.1f} s after the kill"


def test_kill_a_worker_mid_csv_loses_and_duplicates_no_row(stack: Stack) -> None:
    rows = random_rows(200_000, seed=21)
    ids = [f"r{n}" for n in range(len(rows))]
    body = csv_body(ids, rows)
    victim = stack.containers("worker")[0]
    with stack.client(timeout=300) as http:
        job_id = submit_csv(http, body)
        # Mid-job: some chunks scored, some not.
        wait_for(lambda: _chunks_done(http, job_id) >= 1, 120, "the first chunk")
        done_at_kill = _chunks_done(http, job_id)
        killed_at = time.time()
        docker("kill", victim)
        killed = time.monotonic()
        out = csv_result(http, job_id)
        recovery = time.monotonic() - killed
        view = http.get(f"/v1/jobs/{job_id}").json()
    got_ids = [r[0] for r in out[1:]]
    lost = len(set(ids) - set(got_ids))
    duplicated = len(got_ids) - len(set(got_ids))
    chunks = view["progress"]["chunks_total"]
    DRILLS.append(
        {
            "scenario": f"docker kill 1 of 2 workers mid-CSV ({len(rows) // 1000}k rows)",
            "accepted": f"1 job, {len(rows)} rows",
            "completed": f"{len(got_ids)} rows",
            "lost": lost,
            "duplicated": duplicated,
            "recovery s": f"{recovery:.1f}",
            "notes": f"killed after {done_at_kill}/{chunks} chunks; "
            + failover_note(stack, killed_at),
        }
    )
    revive(stack, victim)
    assert got_ids == ids
    assert [float(r[1]) for r in out[1:]] == stack.expected(rows)


def _chunks_done(http: object, job_id: str) -> int:
    view = http.get(f"/v1/jobs/{job_id}").json()  # type: ignore[attr-defined]
    return int((view.get("progress") or {}).get("chunks_done", 0))


def test_kill_a_worker_under_json_load_fails_over_to_the_survivor(stack: Stack) -> None:
    victim = stack.containers("worker")[0]
    with Load(stack, clients=4, rows=4000) as load:  # jobs long enough to be held at the kill
        time.sleep(3.0)
        killed_at = time.time()
        docker("kill", victim)
        killed = time.monotonic()
        in_flight = list(load.accepted)  # accepted before the kill: some held by the victim
        time.sleep(2.0)
    # Recovery: until the last job accepted before the kill has its result.
    completed_before, lost_before, wrong_before = load.check(in_flight)
    recovery = time.monotonic() - killed
    completed, lost, wrong = load.check()
    DRILLS.append(
        {
            "scenario": "docker kill 1 of 2 workers under JSON load",
            "accepted": len(load.accepted),
            "completed": completed,
            "lost": lost,
            "duplicated": "n/a (sticky results)",
            "recovery s": f"{recovery:.1f}",
            "notes": f"{len(in_flight)} accepted before the kill; "
            + failover_note(stack, killed_at),
        }
    )
    revive(stack, victim)
    assert (lost_before, wrong_before, lost, wrong) == (0, 0, 0, 0), load.problems[:5]
    assert completed_before == len(in_flight) and completed == len(load.accepted)
    assert load.statuses()[500] == 0


def test_restart_redis_under_load_loses_no_accepted_job(stack: Stack) -> None:
    redis = stack.containers("redis")[0]
    with Load(stack) as load:
        time.sleep(2.0)
        restart = time.monotonic()
        docker("restart", redis)
        back = time.monotonic()
        wait_for(lambda: load.first_accepted_after(back) < float("inf"), 60, "a 202 again")
        time.sleep(1.0)
    completed, lost, wrong = load.check()
    statuses = load.statuses()
    DRILLS.append(
        {
            "scenario": "docker restart redis (AOF) under load",
            "accepted": len(load.accepted),
            "completed": completed,
            "lost": lost,
            "duplicated": "n/a (sticky results)",
            "recovery s": f"{back - restart + load.first_accepted_after(back):.1f}",
            "notes": _answers(statuses),
        }
    )
    stack.wait_ready()
    assert (lost, wrong) == (0, 0), load.problems[:5]
    assert statuses[500] == statuses[-1] == 0, statuses


def test_pause_redis_5s_answers_503_then_recovers(stack: Stack) -> None:
    redis = stack.containers("redis")[0]
    with Load(stack) as load:
        time.sleep(2.0)
        docker("pause", redis)
        paused = time.monotonic()
        probes = _probe_until(stack, paused + 5.0)  # fresh requests while Redis is paused
        # Redis runs again before `docker unpause` returns: a request waiting for it can be
        # answered 202 in between, so "while paused" ends when the unpause is asked for.
        unpausing = time.monotonic()
        docker("unpause", redis)
        unpaused = time.monotonic()
        wait_for(lambda: load.first_accepted_after(unpaused) < float("inf"), 60, "a 202 again")
        time.sleep(1.0)
    completed, lost, wrong = load.check()
    # Sent and answered while Redis was paused: only 503s (the load's and the probes'). A request
    # already inside the gateway when Redis froze may wait for it and, once it is back, be
    # accepted: that is no failure, but how long it waited is reported.
    during = Counter(
        a.status for a in load.answers if paused <= a.sent and a.sent + a.took < unpausing
    )
    during.update(a.status for a in probes)
    in_flight = [a for a in load.answers if a.sent < paused < a.sent + a.took]
    waited = max((a.took for a in in_flight), default=0.0)
    then = _answers(Counter(a.status for a in in_flight))
    slowest_probe = max(a.took for a in probes)
    DRILLS.append(
        {
            "scenario": "docker pause redis 5 s under load",
            "accepted": len(load.accepted),
            "completed": completed,
            "lost": lost,
            "duplicated": "n/a (sticky results)",
            "recovery s": f"{load.first_accepted_after(unpaused):.1f}",
            "notes": f"answered while paused: {_answers(during)} (slowest probe"
            f" {slowest_probe:.1f} s); {len(in_flight)} in flight at the pause waited up to"
            f" {waited:.1f} s, then: {then}",
        }
    )
    assert (lost, wrong) == (0, 0), load.problems[:5]
    assert during and set(during) == {503}, during
    assert load.statuses()[500] == load.statuses()[-1] == 0


def test_restart_the_gateway_gives_errors_or_answers_never_a_hang(stack: Stack) -> None:
    gateway = stack.containers("gateway")[0]
    with Load(stack) as load:
        time.sleep(2.0)
        restart = time.monotonic()
        threading.Thread(target=docker, args=("restart", gateway), daemon=True).start()
        wait_for(lambda: load.first_accepted_after(restart + 1) < float("inf"), 90, "a 202")
        time.sleep(1.0)
    completed, lost, wrong = load.check()
    statuses = load.statuses()
    DRILLS.append(
        {
            "scenario": "docker restart gateway under load",
            "accepted": len(load.accepted),
            "completed": completed,
            "lost": lost,
            "duplicated": "n/a (sticky results)",
            "recovery s": f"{1 + load.first_accepted_after(restart + 1):.1f}",
            "notes": _answers(statuses),
        }
    )
    stack.wait_ready()
    assert (lost, wrong) == (0, 0), load.problems[:5]
    assert statuses[-1] == 0 and statuses[500] == 0, statuses


def _probe_until(stack: Stack, end: float) -> list[Answer]:
    """One request after another, each on a new connection, until `end` (monotonic)."""
    probes = []
    while time.monotonic() < end - 0.5:
        sent = time.monotonic()
        with stack.client(timeout=CLIENT_TIMEOUT) as http:
            try:
                status = http.post("/v1/jobs", json={"data": random_rows(1, seed=5)}).status_code
            except httpx.TimeoutException:
                status = -1
        probes.append(Answer(sent, time.monotonic() - sent, status))
    return probes


def _answers(statuses: object) -> str:
    names = {0: "conn. error", -1: "hang"}
    counts = sorted(dict(statuses).items())  # type: ignore[call-overload]
    return ", ".join(f"{names.get(k, k)}: {v}" for k, v in counts)
