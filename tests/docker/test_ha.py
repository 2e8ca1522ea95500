"""Redis failover in containers: the HA variant (docker-compose.ha.yaml) under load.

`.ci/docker-stack test` brings this stack up after the main suite (master `redis`,
`redis-replica`, three sentinels, gateway and one worker configured with the sentinels) and runs
this file alone against it. The drill is `make drill-ha`'s (bench/drill_ha_containers.py), made
short: one `docker kill` of the master container under one-row load plus a 100,000-row CSV job,
then one `docker pause` of the master past down-after-milliseconds. Every accepted job's result
is checked (the drill's model predicts row sums), and the CSV output must hold each row once with
its right prediction. Seconds without service are reported in the drill table, not asserted.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator

import pytest

from bench.drill_ha import Run
from bench.drill_ha_containers import ContainerDrill
from tests.docker.conftest import DRILLS

pytestmark = [
    pytest.mark.timeout(400),
    pytest.mark.skipif(
        "docker-compose.ha.yaml" not in os.environ.get("TEST_DOCKER_COMPOSE", ""),
        reason="needs the HA stack (.ci/docker-stack test brings it up for this file)",
    ),
]
CSV_ROWS = 100_000


@pytest.fixture(scope="module")
def drill() -> Iterator[ContainerDrill]:
    drill = ContainerDrill(csv_rows=CSV_ROWS, clients=4)
    drill.start("ha")
    yield drill
    drill.stop()


def record(run: Run, scenario: str) -> None:
    answers = ", ".join(f"{status}: {n}" for status, n in sorted(run.answers.items()))
    DRILLS.append(
        {
            "scenario": scenario,
            "accepted": run.accepted,
            "completed": run.completed,
            "lost": run.lost,
            "duplicated": f"{run.duplicates} executions",
            "recovery s": f"{run.outage:.1f} without a 202",
            "notes": f"{run.note}; CSV: {run.csv}; answers: {answers}",
        }
    )


def test_killing_the_master_container_loses_no_accepted_job_and_the_csv_is_exact(
    drill: ContainerDrill,
) -> None:
    run = asyncio.run(drill.run("kill", "kill", with_csv=True))
    record(
        run,
        f"docker kill the Redis master (HA: replica + 3 sentinels), {CSV_ROWS // 1000}k-row CSV",
    )
    assert run.accepted > 0
    assert (run.lost, run.wrong) == (0, 0), run
    assert run.completed == run.accepted
    assert run.server_errors == 0, run.answers
    assert run.csv.startswith("ok "), run.csv
    assert drill.cluster.role(drill.cluster.master()) == "master"


def test_a_paused_master_is_replaced_and_rejoins_as_a_replica_losing_nothing(
    drill: ContainerDrill,
) -> None:
    victim = drill.cluster.master()
    run = asyncio.run(drill.run("partition", "partition", with_csv=False))
    record(run, "docker pause the Redis master past down-after-milliseconds, then unpause")
    assert "rejoined as replica" in run.note, run.note
    assert drill.cluster.master() != victim
    assert drill.cluster.role(victim) == "slave"
    assert run.accepted > 0
    assert (run.lost, run.wrong) == (0, 0), run
    assert run.completed == run.accepted
    assert run.server_errors == 0, run.answers
