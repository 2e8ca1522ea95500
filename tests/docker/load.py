"""Client load for the container drills: threads submitting JSON jobs until told to stop.

Every answer is recorded with when it was sent and how long it took; a request that hangs hits
the client timeout and is counted as a hang. Jobs are drawn from a few fixed blocks of rows, so
the expected predictions are computed once per block.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import dataclass, field

import httpx

from tests.docker.conftest import Stack
from tests.docker.jobs import random_rows, result

CLIENT_TIMEOUT = 15.0  # far above the gateway's 2 s Redis timeout: reaching it is a hang


@dataclass
class Answer:
    sent: float
    took: float
    status: int  # 0: a transport error (connection refused or reset), -1: a hang (timeout)


@dataclass
class Load:
    """`clients` threads posting jobs of `rows` rows to the stack until `stop()`."""

    stack: Stack
    clients: int = 4
    rows: int = 5
    blocks: list[list[list[float]]] = field(default_factory=list)
    accepted: dict[str, int] = field(default_factory=dict)  # job id -> block index
    accepted_at: dict[str, float] = field(default_factory=dict)
    answers: list[Answer] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # what became of each lost job
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.blocks = [random_rows(self.rows, seed=100 + i) for i in range(8)]

    def __enter__(self) -> Load:
        for i in range(self.clients):
            thread = threading.Thread(target=self._client, args=(i,), daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(CLIENT_TIMEOUT + 5)

    def _client(self, i: int) -> None:
        n = i
        with self.stack.client(timeout=CLIENT_TIMEOUT) as http:
            while not self._stop.is_set():
                block = n % len(self.blocks)
                n += self.clients
                sent = time.monotonic()
                try:
                    response = http.post("/v1/jobs", json={"data": self.blocks[block]})
                    status = response.status_code
                except httpx.TimeoutException:
                    status = -1
                except httpx.TransportError:
                    status = 0
                now = time.monotonic()
                with self._lock:
                    self.answers.append(Answer(sent, now - sent, status))
                    if status == 202:
                        job_id = str(response.json()["job_id"])
                        self.accepted[job_id] = block
                        self.accepted_at[job_id] = now
                if status != 202:
                    time.sleep(0.2)  # what a client does on 503 + Retry-After, or no answer

    def statuses(self, start: float = 0.0, end: float = float("inf")) -> Counter[int]:
        """Answers to the requests sent between `start` and `end` (monotonic), by status."""
        with self._lock:
            return Counter(a.status for a in self.answers if start <= a.sent < end)

    def first_accepted_after(self, moment: float) -> float:
        """Seconds from `moment` to the first 202 sent after it (inf: none)."""
        with self._lock:
            times = [a.sent + a.took for a in self.answers if a.sent >= moment and a.status == 202]
        return min(times, default=float("inf")) - moment

    def check(self, job_ids: list[str] | None = None) -> tuple[int, int, int]:
        """Waits for the jobs (all accepted ones by default): (completed, lost, wrong)."""
        expected = [self.stack.expected(block) for block in self.blocks]
        completed = lost = wrong = 0
        deadline = time.monotonic() + 90  # one deadline for all: a stuck stack fails, not hangs
        with self.stack.client() as http:
            for job_id in job_ids if job_ids is not None else list(self.accepted):
                response = result(http, job_id, timeout=max(0.0, deadline - time.monotonic()))
                if response.status_code != 200:
                    lost += 1
                    self.problems.append(f"{job_id}: {response.status_code} {response.text[:200]}")
                    continue
                completed += 1
                wrong += response.json()["data"] != expected[self.accepted[job_id]]
        return completed, lost, wrong
