"""`make drill-ha`: Redis master failures under load with Sentinel; no accepted job may be lost.

    python -m bench.drill_ha [--runs 10] [--csv-rows 500000] [--clients 4]

One replicated Redis on 127.0.0.1 (`devrun.sentinel`: master, replica, 3 sentinels, quorum 2,
AOF, min-replicas-to-write 1), one gateway and one worker configured with
`MLQUEUE_REDIS_SENTINELS`, started once: they must follow every failover without a restart.
Scenarios:
  kill       (x runs) one-row jobs from several clients plus a CSV upload; SIGKILL the master;
             Sentinel promotes the replica; the old master is restarted as its replica (what a
             restart policy does). Every 202 must complete with the right result, the CSV must
             hold exactly one correct prediction per row, answers are 202 or 503 (never 500).
  partition  SIGSTOP the master past down-after-milliseconds; failover; SIGCONT: the old master
             must rejoin as a replica, and no 202 may be lost.
  lag        the replica's link is cut without closing it (a relay stops forwarding, as a
             network partition drops packets), then the master dies: with `WAIT` every 202
             survives; run once more with `MLQUEUE_REPLICA_WAIT=false` (contrast) to count the
             accepted jobs that a failover loses without it.
Duplicate executions (a job or chunk predicted twice) are allowed and counted. Exits 1 when a
run loses an accepted job, returns a wrong result, answers 500, or (kill runs) is without
service for more than `--max-outage` seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import io
import itertools
import os
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import numpy as np

from bench.relay import Relay
from bench.stack import Stack
from devrun.sentinel import ReplicatedRedis
from shared.settings import Settings
from tests.integration.models import Tally, add_model

if TYPE_CHECKING:
    from bench.drill_ha_containers import Cluster

TAG = Tally.TAG_BASE
VERIFY_SECONDS = 90.0
CHUNK_ROWS: int = Settings.model_fields["csv_chunk_rows"].default  # MLQUEUE_CSV_CHUNK_ROWS
ENV = {
    "MLQUEUE_REDIS_TIMEOUT": "2",
    "MLQUEUE_REPLICA_WAIT_TIMEOUT": "0.5",
    "MLQUEUE_GATEWAY_WORKERS": "1",
    "MLQUEUE_UNACKED_RESTORE_INTERVAL": "1",
    "MLQUEUE_WORKER_METRICS_PORT": "0",
    "MLQUEUE_DEFAULT_MODEL": "tally",
    "MLQUEUE_LOG_LEVEL": "WARNING",
}


@dataclass
class Run:
    """One scenario's figures."""

    name: str
    accepted: int = 0
    completed: int = 0
    wrong: int = 0
    lost: int = 0
    duplicates: int = 0
    outage: float = 0.0
    answers: Counter[str] = field(default_factory=Counter)
    csv: str = "-"
    note: str = ""

    @property
    def server_errors(self) -> int:
        return sum(
            n for status, n in self.answers.items() if status.startswith("5") and status != "503"
        )


@dataclass
class Load:
    """What the clients saw during one run."""

    accepted: dict[str, float] = field(default_factory=dict)  # job id -> tag
    ok_times: list[float] = field(default_factory=list)
    answers: Counter[str] = field(default_factory=Counter)
    tags: itertools.count[int] = field(default_factory=lambda: itertools.count(TAG))

    def outage(self, since: float) -> float:
        """The longest stretch after `since` without a 202 (up to the last 202)."""
        times = [since, *(t for t in self.ok_times if t >= since)]
        return max((b - a for a, b in itertools.pairwise(times)), default=0.0)


def row(tag: int) -> list[float]:
    """A one-row job: its tag first, then halves, so that the row sum is exact."""
    return [float(tag), *((tag + k) % 7 * 0.5 for k in range(9))]


class CsvFile:
    """The big CSV (id, f0..f9) and the prediction each row must get."""

    def __init__(self, rows: int) -> None:
        ids = np.arange(rows)
        features = np.column_stack([ids % 1000] + [(ids + k) % 11 for k in range(9)]).astype(
            np.float64
        )
        self.expected = features.sum(axis=1)
        out = io.StringIO()
        out.write("id," + ",".join(f"f{i}" for i in range(10)) + "\n")
        np.savetxt(out, np.column_stack([ids, features]), fmt="%d", delimiter=",")
        self.data = out.getvalue().encode()
        self.rows = rows

    def check(self, body: str) -> str:
        """ "ok" if `body` holds exactly one correct prediction per row, else what is wrong."""
        reader = csv.reader(io.StringIO(body))
        if next(reader, None) != ["id", "prediction"]:
            return "bad header"
        seen = np.zeros(self.rows, dtype=np.int64)
        wrong = 0
        for record in reader:
            i = int(record[0])
            seen[i] += 1
            wrong += float(record[1]) != self.expected[i]
        missing, doubled = int((seen == 0).sum()), int((seen > 1).sum())
        if missing or doubled or wrong:
            return f"missing {missing}, doubled {doubled}, wrong {wrong}"
        return "ok"


class HaDrill:
    """The replicated Redis, the gateway and the worker, and what the runs share."""

    def __init__(self, root: Path, csv_rows: int, clients: int, tally_path: str = "") -> None:
        self.root = root
        self.models = root / "models"
        self.tally = root / "tally.log"
        # `tally_path`: where the worker writes that log, when it sees it under another path.
        add_model(self.models, "tally", Tally(tally_path or str(self.tally)))
        self.csv = CsvFile(csv_rows) if csv_rows else None
        self.clients = clients
        self.tags = itertools.count(TAG)  # unique across runs, as job ids are
        self.redis: Cluster | None = None
        self.stack: Stack | None = None
        self.relay: Relay | None = None
        self.headers: dict[str, str] = {}

    @property
    def base_url(self) -> str:
        assert self.stack is not None
        return self.stack.base_url

    def start(self, name: str, replica_wait: bool = True) -> None:
        """A fresh replicated Redis, worker and gateway."""
        self.stop()
        redis = ReplicatedRedis(self.root / name / "redis").start()
        self.redis = redis
        env = {**ENV, "MLQUEUE_REPLICA_WAIT": str(replica_wait).lower()}
        self.stack = Stack(
            self.root / name, self.models, env=env, sentinels=redis.sentinel_addresses
        )
        self.stack.start_worker("w1", concurrency=2)
        self.stack.start_gateway()

    def stop(self) -> None:
        if self.stack is not None:
            self.stack.stop()
        if self.relay is not None:
            self.relay.stop()
        if isinstance(self.redis, ReplicatedRedis):
            self.redis.stop()
        self.stack = self.redis = self.relay = None

    # --- load --------------------------------------------------------------------------
    async def _client(self, http: httpx.AsyncClient, load: Load, stop: asyncio.Event) -> None:
        while not stop.is_set():
            tag = next(load.tags)
            try:
                response = await http.post("/v1/jobs", json={"data": [row(tag)], "model": "tally"})
            except httpx.HTTPError as exc:
                load.answers[type(exc).__name__] += 1
                await asyncio.sleep(0.05)
                continue
            load.answers[str(response.status_code)] += 1
            if response.status_code == 202:
                load.accepted[response.json()["job_id"]] = tag
                load.ok_times.append(time.monotonic())
                await asyncio.sleep(0.01)
            else:
                await asyncio.sleep(0.05)  # a drill probes faster than Retry-After says

    async def _csv_job(self, http: httpx.AsyncClient, run: Run) -> str | None:
        """Upload the CSV (again after a 503, as a client would); returns its job id."""
        assert self.csv is not None
        for _ in range(8):
            try:
                response = await http.post(
                    "/v1/jobs/csv",
                    params={"model": "tally", "id_column": "id"},
                    files={"file": ("big.csv", self.csv.data, "text/csv")},
                    timeout=120,
                )
            except httpx.HTTPError as exc:
                run.answers[f"csv {type(exc).__name__}"] += 1
                await asyncio.sleep(1)
                continue
            run.answers[f"csv {response.status_code}"] += 1
            if response.status_code == 202:
                return str(response.json()["job_id"])
            await asyncio.sleep(1)
        return None

    async def _csv_result(self, http: httpx.AsyncClient, job_id: str | None) -> str:
        if job_id is None or self.csv is None:
            return "never accepted"
        deadline = time.monotonic() + VERIFY_SECONDS
        while time.monotonic() < deadline:
            try:
                response = await http.get(
                    f"/v1/jobs/{job_id}/result", params={"wait": 10}, timeout=60
                )
            except httpx.HTTPError:
                await asyncio.sleep(0.5)
                continue
            if response.status_code == 200 and response.headers["content-type"].startswith(
                "text/csv"
            ):
                return self.csv.check(response.text)
            if response.status_code == 409:  # the job failed: say why
                error = response.json().get("job", {}).get("error") or {}
                return f"failed: {error.get('type')}: {str(error.get('message'))[:120]}"
            if response.status_code not in (200, 202, 503):
                return f"{response.status_code} {response.text[:80]}"
            await asyncio.sleep(0.2)
        return "not finished"

    async def _verify(self, http: httpx.AsyncClient, load: Load, run: Run) -> None:
        """Every accepted job must complete with its row's sum, within one shared deadline."""
        deadline = time.monotonic() + VERIFY_SECONDS
        gate = asyncio.Semaphore(8)

        async def one(job_id: str, tag: float) -> None:
            async with gate:
                while time.monotonic() < deadline:
                    wait = max(0.0, min(20.0, deadline - time.monotonic()))
                    try:
                        response = await http.get(
                            f"/v1/jobs/{job_id}/result", params={"wait": wait}, timeout=wait + 10
                        )
                    except httpx.HTTPError:
                        await asyncio.sleep(0.5)
                        continue
                    if response.status_code == 200:
                        run.completed += 1
                        run.wrong += response.json()["data"] != [sum(row(int(tag)))]
                        return
                    if response.status_code == 404:
                        break  # the record itself is gone
                    await asyncio.sleep(0.2)
                run.lost += 1

        await asyncio.gather(*(one(j, t) for j, t in load.accepted.items()))

    def _scorings(self, offset: int) -> tuple[int, int]:
        """(one-row jobs predicted more than once, CSV chunk scorings) since `offset`."""
        lines = (
            self.tally.read_bytes()[offset:].decode().splitlines() if self.tally.exists() else []
        )
        jobs = Counter(line for line in lines if line.startswith("j "))
        return sum(n - 1 for n in jobs.values()), sum(line.startswith("c ") for line in lines)

    # --- scenarios ---------------------------------------------------------------------
    async def run(self, name: str, fault: str, with_csv: bool) -> Run:
        assert self.redis is not None
        self.redis.wait_in_sync()
        run = Run(name)
        load, stop = Load(tags=self.tags), asyncio.Event()
        offset = self.tally.stat().st_size if self.tally.exists() else 0
        client = httpx.AsyncClient(base_url=self.base_url, headers=self.headers, timeout=10)
        async with client as http:
            clients = [
                asyncio.create_task(self._client(http, load, stop)) for _ in range(self.clients)
            ]
            upload = asyncio.create_task(self._csv_job(http, run)) if with_csv else None
            await asyncio.sleep(1.5)
            since = time.monotonic()
            run.note = await asyncio.to_thread(getattr(self, f"_{fault}"), load, since)
            # Service is back once a 202 arrives after the fault's handling ended (a 202 whose
            # answer was merely in flight at the fault does not count), within bounds.
            handled = time.monotonic()
            back = handled + 40
            while not [t for t in load.ok_times if t > handled] and time.monotonic() < back:  # noqa: ASYNC110
                await asyncio.sleep(0.1)
            await asyncio.sleep(1.0)
            stop.set()
            await asyncio.gather(*clients)
            csv_id = await upload if upload else None
            await self._verify(http, load, run)
            if with_csv:
                run.csv = await self._csv_result(http, csv_id)
        run.accepted = len(load.accepted)
        run.outage = load.outage(since)
        run.answers.update(load.answers)
        run.duplicates, scorings = self._scorings(offset)
        if with_csv and self.csv is not None:
            # A CSV upload cut by the failover is sent again (a new job): its chunks count too.
            uploads = sum(n for a, n in run.answers.items() if a.startswith("csv "))
            chunk_rows = int(os.environ.get("MLQUEUE_CSV_CHUNK_ROWS") or CHUNK_ROWS)
            chunks = -(-self.csv.rows // chunk_rows)
            run.csv += f" ({uploads} upload(s); {scorings} scorings of {chunks} chunks)"
        return run

    def _kill(self, load: Load, since: float) -> str:
        assert self.redis is not None
        victim = self.redis.master()
        self.redis.kill(victim)
        new = self.redis.wait_for_new_master(victim)
        failover = time.monotonic() - since
        self.redis.start_node(victim, replica_of=new)  # a restart policy brings it back
        self.redis.wait_in_sync()
        return f"{victim.name}->{new.name}, promoted after {failover:.1f} s"

    def _partition(self, load: Load, since: float) -> str:
        assert self.redis is not None
        victim = self.redis.master()
        self.redis.pause(victim)
        paused = time.monotonic()
        new = self.redis.wait_for_new_master(victim)
        promoted = time.monotonic()
        self.redis.resume(victim)  # the partition heals once the replica was promoted
        rejoined = _wait(lambda: self.redis is not None and self.redis.role(victim) == "slave", 40)
        # While isolated, the old master could not have confirmed anything: no 202 may date
        # from then (every 202 is checked for loss anyway).
        isolated = len([t for t in load.ok_times if paused < t <= promoted])
        return (
            f"{victim.name}->{new.name} promoted after {promoted - since:.1f} s; old master "
            f"{'rejoined as replica' if rejoined else 'DID NOT rejoin'} "
            f"{time.monotonic() - since:.1f} s after the pause; "
            f"{isolated} accepted while it was isolated"
        )

    def _lag(self, load: Load, since: float) -> str:
        assert isinstance(self.redis, ReplicatedRedis)
        victim = self.redis.master()
        replica = next(node for node in self.redis.nodes if node is not victim)
        # Routed through the relay only now: Sentinel re-points a replica that follows another
        # address than the master's ("+fix-slave-config"), though not within seconds.
        self.relay = relay = Relay(victim.port).start()
        with replica.client() as client:
            client.execute_command("REPLICAOF", "127.0.0.1", str(relay.port))  # type: ignore[no-untyped-call]
        self.redis.wait_in_sync()
        cut = time.monotonic()
        relay.hold()  # the link stays open, nothing gets through: the replica falls behind
        time.sleep(2.0)  # below min-replicas-max-lag: the master still takes writes
        with replica.client() as client:
            through_relay = client.info("replication").get("master_port") == relay.port
        held = len([t for t in load.ok_times if t > cut])
        self.redis.kill(victim)
        relay.stop()  # what was in flight to the replica is dropped with the link
        self.redis.start_node(victim, replica_of=self.redis.wait_for_new_master(victim))
        if not through_relay:
            return "INVALID: Sentinel re-pointed the replica past the relay"
        return f"{held} accepted while the replica's link was cut"


def _wait(check: object, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():  # type: ignore[operator]
            return True
        time.sleep(0.1)
    return False


def table(runs: list[Run]) -> str:
    head = (
        f"{'run':<12}{'accepted':>9}{'done':>7}{'wrong':>6}{'lost':>5}{'dup':>5}"
        f"{'outage s':>9}{'503':>6}{'5xx':>5}  csv"
    )
    lines = [head, "-" * len(head)]
    for r in runs:
        lines.append(
            f"{r.name:<12}{r.accepted:>9}{r.completed:>7}{r.wrong:>6}{r.lost:>5}"
            f"{r.duplicates:>5}{r.outage:>9.1f}{r.answers['503']:>6}{r.server_errors:>5}  {r.csv}"
        )
    return "\n".join(lines)


async def main_async(args: argparse.Namespace, root: Path) -> list[Run]:
    if args.docker:
        from bench.drill_ha_containers import ContainerDrill  # it builds on this module

        drill: HaDrill = ContainerDrill(args.csv_rows, args.clients)
    else:
        drill = HaDrill(root, args.csv_rows, args.clients)
    runs: list[Run] = []

    def report(run: Run) -> None:
        runs.append(run)
        print(table(runs[-1:]).splitlines()[-1], "|", run.note, flush=True)

    try:
        drill.start("kill")
        for i in range(args.runs):
            report(await drill.run(f"kill {i + 1}", "kill", with_csv=bool(args.csv_rows)))
        if args.partition:
            report(await drill.run("partition", "partition", with_csv=False))
        if args.contrast:
            for wait in (True, False):
                drill.start(f"lag-wait-{wait}", replica_wait=wait)
                report(await drill.run("lag, WAIT" if wait else "lag, no WAIT", "lag", False))
    finally:
        drill.stop()
    return runs


def failures(runs: list[Run], max_outage: float) -> list[str]:
    """The runs that broke a promise: a lost or wrong job (but in the no-WAIT contrast), a 500,
    a wrong CSV output, an old master that did not rejoin as a replica, or (kill runs) more
    than `max_outage` seconds without service."""
    return [
        r.name
        for r in runs
        if r.server_errors
        or "INVALID" in r.note
        or "DID NOT rejoin" in r.note
        or r.wrong
        or (r.lost and r.name != "lag, no WAIT")
        or r.csv.split(" ")[0] not in ("-", "ok")
        or (r.name.startswith("kill") and r.outage > max_outage)
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10, help="master kills (default 10)")
    parser.add_argument("--csv-rows", type=int, default=500_000, help="0: no CSV job")
    parser.add_argument("--clients", type=int, default=4, help="concurrent one-row clients")
    parser.add_argument("--max-outage", type=float, default=10.0)
    parser.add_argument("--no-partition", dest="partition", action="store_false")
    parser.add_argument("--no-contrast", dest="contrast", action="store_false")
    parser.add_argument(
        "--docker",
        action="store_true",
        help="on the compose stack that `.ci/docker-stack drill-ha` started (its environment)",
    )
    parser.add_argument("--keep", type=Path, help="keep logs and data in this new directory")
    args = parser.parse_args(argv)
    started = time.monotonic()
    load = os.getloadavg()
    if args.keep:
        args.keep.mkdir(parents=True)
        runs = asyncio.run(main_async(args, args.keep))
    else:
        with tempfile.TemporaryDirectory(prefix="mlqueue-drill-ha-") as tmp:
            runs = asyncio.run(main_async(args, Path(tmp)))
    print()
    print(table(runs))
    took = time.monotonic() - started
    where = "containers" if args.docker else "local processes"
    print(
        f"\n{len(runs)} runs in {took:.0f} s ({where}); "
        f"load average {load[0]:.1f} before, {os.getloadavg()[0]:.1f} after"
    )
    failed = failures(runs, args.max_outage)
    if failed:
        print("FAILED:", ", ".join(failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
