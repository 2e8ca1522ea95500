"""The README's first command, as a user runs it: start, wait for /readyz, one job, Ctrl-C."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from devrun import processes
from worker.sklearn_model import SklearnModel

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_make_run_serves_a_job_and_ctrl_c_stops_everything(tmp_path: Path) -> None:
    http_port, redis_port = processes.free_port(), processes.free_port()
    env = {
        **os.environ,
        "MLQUEUE_PORT": str(http_port),
        "MLQUEUE_LOCAL_REDIS_PORT": str(redis_port),
        "MLQUEUE_MODEL_DIR": str(tmp_path / "models"),
        "MLQUEUE_WORKER_CONCURRENCY": "1",
    }
    env.pop("MLQUEUE_REDIS_URL", None)
    log = (tmp_path / "make-run.log").open("wb")
    make = subprocess.Popen(
        ["make", "--no-print-directory", "run"],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{http_port}"
    try:
        started = time.monotonic()
        processes.wait_until(lambda: _ready(base), 120, "make run /readyz", make)
        ready_after = time.monotonic() - started
        # The demo model was trained into the empty registry by `make run` itself.
        model = SklearnModel.load(tmp_path / "models" / "demo" / "1" / "model.skops")
        rows = [[0.01 * (i + j) for j in range(10)] for i in range(3)]
        job = httpx.post(f"{base}/v1/jobs", json={"data": rows}).json()
        result = httpx.get(
            f"{base}/v1/jobs/{job['job_id']}/result", params={"wait": 10}, timeout=15
        )
        assert result.status_code == 200
        assert result.json()["data"] == [float(v) for v in model.predict(np.asarray(rows))]
        # A worker killed outright is started again by `python -m devrun`, and serves.
        worker = next(
            p
            for p in processes.descendants(make.pid)
            if b"worker.celery_app" in _cmdline(p)
            and b"-m\0devrun\0" in _cmdline(processes.parents().get(p, 0))
        )
        os.kill(worker, signal.SIGKILL)
        processes.wait_until(
            lambda: b"mlqueue: restarting worker" in (tmp_path / "make-run.log").read_bytes(),
            30,
            "worker restart",
            make,
        )
        processes.wait_until(lambda: _ready(base), 60, "ready again", make)
        job = httpx.post(f"{base}/v1/jobs", json={"data": rows}).json()
        # The restarted worker may take seconds to boot: the client waits as long as it asks to.
        result = httpx.get(
            f"{base}/v1/jobs/{job['job_id']}/result", params={"wait": 20}, timeout=30
        )
        assert result.json()["data"] == [float(v) for v in model.predict(np.asarray(rows))]
        tree = processes.descendants(make.pid)
        assert len(tree) >= 4  # launcher, redis-server, worker (+ child), gateway
        os.killpg(make.pid, signal.SIGINT)  # what Ctrl-C in the terminal does
        make.wait(timeout=60)
        deadline = time.monotonic() + 10
        while any(alive(p) for p in tree) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert [p for p in tree if alive(p)] == []
        assert processes.port_is_free(http_port)
        assert processes.port_is_free(redis_port)
        print(f"make run ready after {ready_after:.1f} s")
    finally:
        if make.poll() is None:
            os.killpg(make.pid, signal.SIGKILL)
        log.close()
    assert "mlqueue: stopped" in (tmp_path / "make-run.log").read_text()


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def _ready(base: str) -> bool:
    try:
        return httpx.get(f"{base}/readyz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False
