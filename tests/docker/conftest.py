"""The compose stack that `make test-docker` (.ci/test-docker) built and started, as fixtures.

Collected only when TEST_DOCKER_URL is set, i.e. under `make test-docker`; plain `make test`
skips this directory. The tests reach the stack only through the gateway's port published on
127.0.0.1, and act on its containers through the Docker CLI (kill, restart, pause).
Expected predictions come from the worker image itself, in a container with no network: the
demo model the stack serves, through scikit-learn's own `predict`.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import httpx
import pytest

collect_ignore_glob = [] if os.environ.get("TEST_DOCKER_URL") else ["test_*.py"]
DRILLS: list[dict[str, object]] = []  # one row per drill, printed at the end of the session

# Reads one JSON list of rows per line, answers one JSON list of predictions per line.
ORACLE = """
import sys, json, pathlib, numpy as np
from shared.registry import Registry
from worker.sklearn_model import SklearnModel
registry = Registry(pathlib.Path("/app/models"), "demo")
model = SklearnModel.load(registry.artifact(registry.resolve("demo")), fast=False)
for line in sys.stdin:
    rows = np.asarray(json.loads(line), dtype=float)
    print(json.dumps([float(v) for v in model.predict(rows)]), flush=True)
"""


class Oracle:
    """scikit-learn's own `predict` of the served model, in a worker image container with no
    network, started once: loading the model per question would cost seconds each time."""

    def __init__(self, image: str) -> None:
        argv = ["docker", "run", "--rm", "-i", "--network", "none", "--no-healthcheck", image]
        argv += ["python", "-c", ORACLE]
        self.proc = subprocess.Popen(
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1
        )
        self.lock = threading.Lock()

    def predict(self, rows: list[list[float]]) -> list[float]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        with self.lock:
            self.proc.stdin.write(json.dumps(rows) + "\n")
            self.proc.stdin.flush()
            line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the oracle container exited ({self.proc.poll()})")
        return [float(v) for v in json.loads(line)]

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        self.proc.wait(30)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


@dataclass
class Stack:
    """The running stack: its URL, this run's two API keys, and its containers."""

    url: str
    key: str
    other_key: str
    compose_argv: list[str]
    oracle: Oracle

    def client(self, key: str | None = None, timeout: float = 30) -> httpx.Client:
        headers = {"Authorization": f"Bearer {key or self.key}"}
        return httpx.Client(base_url=self.url, headers=headers, timeout=timeout)

    def compose(self, *args: str, timeout: float = 120) -> str:
        return run([*self.compose_argv, *args], timeout)

    def containers(self, service: str) -> list[str]:
        """Ids of the service's running containers, in a stable order."""
        return sorted(self.compose("ps", "--quiet", service).split())

    def expected(self, rows: list[list[float]]) -> list[float]:
        """The served model's predictions for `rows`, computed by scikit-learn in the image."""
        return self.oracle.predict(rows)

    def logs(self, service: str) -> str:
        return self.compose("logs", "--no-color", service)

    def wait_ready(self, timeout: float = 180) -> None:
        """Until /readyz is 200 and counts every worker container's heartbeat.

        Heartbeats rather than Docker's healthchecks: a restarted worker's first `celery
        inspect ping` comes only after its start period, and on a busy host it can time out.
        """
        wait_for(self._ready, timeout, "every worker to beat and /readyz to be 200")

    def _ready(self) -> bool:
        try:
            response = httpx.get(f"{self.url}/readyz", timeout=5)
        except httpx.HTTPError:
            return False
        workers = response.json().get("checks", {}).get("workers")
        return response.status_code == 200 and workers == len(self.containers("worker"))


def run(argv: list[str], timeout: float, stdin: str | None = None) -> str:
    done = subprocess.run(
        argv, input=stdin, capture_output=True, text=True, timeout=timeout, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"{shlex.join(argv[:6])}...: {done.returncode}: {done.stderr[-2000:]}")
    return done.stdout


def wait_for(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.25)


@pytest.fixture(scope="session")
def stack() -> Iterator[Stack]:
    env = os.environ
    oracle = Oracle(env["TEST_DOCKER_WORKER_IMAGE"])
    yield Stack(
        url=env["TEST_DOCKER_URL"],
        key=env["TEST_DOCKER_KEY"],
        other_key=env["TEST_DOCKER_OTHER_KEY"],
        compose_argv=shlex.split(env["TEST_DOCKER_COMPOSE"]),
        oracle=oracle,
    )
    oracle.close()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """The drill table, in the terminal and in test-artifacts/docker-drills.md."""
    if not DRILLS:
        return
    drills = DRILLS
    columns = ["scenario", "accepted", "completed", "lost", "duplicated", "recovery s", "notes"]
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(str(d.get(c, "")) for c in columns) + " |" for d in drills]
    text = "\n".join(lines) + "\n"
    os.makedirs("test-artifacts", exist_ok=True)
    with open("test-artifacts/docker-drills.md", "w") as out:
        out.write(text)
    terminalreporter.write_sep("-", "container drills")
    terminalreporter.write(text)
