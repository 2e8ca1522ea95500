"""The benchmark's own tools: the open-loop generator, the MLServer config, the report.

Not speed tests: each checks what the tool does (sends on schedule, stops by itself, counts wrong
answers, writes the configuration the docs describe, computes the ratios it prints) against a tiny
HTTP server on 127.0.0.1 or a made-up report.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from bench import mlserver, table
from bench.head_to_head import median_round, round_ratios
from bench.loadgen import encode
from bench.openloop import open_loop
from shared.registry import sha256_file

ROW = [0.01 * i for i in range(10)]
Answer = Callable[[bytes], Awaitable[bytes]]


async def serve(answer: Answer, idle_timeout: float = 60) -> tuple[asyncio.Server, str]:
    """A keep-alive HTTP/1.1 server on 127.0.0.1 that answers every request with `answer(body)`
    and closes a connection idle for `idle_timeout` s."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), idle_timeout)
                length = 0
                for line in head.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                payload = await answer(await reader.readexactly(length))
                writer.write(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                    b"Content-Length: %d\r\n\r\n%s" % (len(payload), payload)
                )
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, TimeoutError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    return server, f"http://127.0.0.1:{port}"


def run_open_loop(answer: Answer, idle_timeout: float = 60, **kwargs: Any) -> dict[str, Any]:
    async def main() -> dict[str, Any]:
        server, url = await serve(answer, idle_timeout)
        try:
            return await open_loop(url, "predict", [(encode("predict", ROW), 1.5)], **kwargs)
        finally:
            server.close()

    return asyncio.run(main())


def slow_answer(seconds: float, value: float = 1.5) -> Answer:
    async def answer(body: bytes) -> bytes:
        assert orjson.loads(body) == {"data": [ROW]}
        await asyncio.sleep(seconds)
        return orjson.dumps({"data": [value]})

    return answer


def test_open_loop_sends_on_schedule_while_earlier_requests_are_outstanding() -> None:
    # 40 arrivals/s for 0.5 s against a server taking 0.2 s each: a closed loop on the 2 warm
    # connections could only have 2 in flight; the open loop opens more and keeps the schedule.
    found = run_open_loop(
        slow_answer(0.2),
        rate=40,
        duration=0.5,
        warm_connections=2,
        max_connections=64,
        drain=10,
    )
    assert found["sent"] == found["completed"] == 20
    assert found["errors"] == found["mismatches"] == found["unfinished"] == 0
    assert found["connections_peak"] >= 3
    assert found["p50_ms"] >= 200  # measured from the scheduled time, so never below the service


def test_open_loop_counts_wrong_answers() -> None:
    found = run_open_loop(
        slow_answer(0, value=2.5),
        rate=50,
        duration=0.2,
        warm_connections=1,
        max_connections=8,
        drain=10,
    )
    assert found["sent"] == found["completed"] == found["mismatches"] == 10


def test_open_loop_drops_connections_the_server_closed_while_idle() -> None:
    # Arrivals 0.25 s apart, the server closing connections idle for 0.1 s: every pooled
    # connection is dead when its turn comes, and no request may fail for it.
    found = run_open_loop(
        slow_answer(0),
        idle_timeout=0.1,
        rate=4,
        duration=1,
        warm_connections=4,
        max_connections=8,
        drain=10,
    )
    assert found["sent"] == found["completed"] == 4
    assert found["errors"] == 0, found["first_error"]


def test_open_loop_stops_by_itself_when_answers_never_come() -> None:
    found = run_open_loop(
        slow_answer(60), rate=20, duration=0.2, warm_connections=1, max_connections=8, drain=0.3
    )
    assert found["sent"] == found["unfinished"] == 4
    assert found["completed"] == 0


def test_v2_body_is_one_fp64_row() -> None:
    body = orjson.loads(encode("v2", ROW))
    assert body == {
        "inputs": [{"name": "input-0", "shape": [1, 10], "datatype": "FP64", "data": ROW}]
    }
    assert orjson.loads(encode("jobs", ROW)) == {"data": [ROW]}


def test_mlserver_config_batches_on_loopback_with_the_verified_model(tmp_path: Path) -> None:
    model = tmp_path / "model.joblib"
    model.write_bytes(b"not really a model")
    folder = mlserver.write_config(model, sha256_file(model), tmp_path / "mls", (8501, 8502, 8503))
    settings = json.loads((folder / "settings.json").read_text())
    assert settings["host"] == "127.0.0.1"
    assert (settings["http_port"], settings["grpc_port"], settings["metrics_port"]) == (
        8501,
        8502,
        8503,
    )
    assert settings["parallel_workers"] == 2
    model_settings = json.loads((folder / "demo" / "model-settings.json").read_text())
    assert model_settings["name"] == "demo"
    assert model_settings["implementation"] == "mlserver_sklearn.SKLearnModel"
    assert (model_settings["max_batch_size"], model_settings["max_batch_time"]) == (64, 0.002)
    assert model_settings["parameters"]["uri"] == str(model)


def test_mlserver_config_refuses_a_model_file_that_does_not_match_its_digest(
    tmp_path: Path,
) -> None:
    model = tmp_path / "model.joblib"
    model.write_bytes(b"changed after the manifest was written")
    with pytest.raises(RuntimeError, match="sha256"):
        mlserver.write_config(model, "0" * 64, tmp_path / "mls", (1, 2, 3))
    assert not (tmp_path / "mls" / "settings.json").exists()


def _load(rate: float, p99: float = 40.0, errors: int = 0) -> dict[str, Any]:
    run = {"jobs_per_s": rate, "p50_ms": 10.0, "p99_ms": p99, "errors": 0, "mismatches": 0}
    return {"load": {**run, "errors": errors, "client_cpu_share": 0.1}, "sequential": run}


def report(**parts: Any) -> dict[str, Any]:
    return {
        "when": "2026-12-01T00:00:00Z",
        "cpus": 2,
        "load_avg_before": [1.0, 1.0, 1.0],
        "load_avg_after": [1.0, 1.0, 1.0],
        "args": {"clients": 64, "duration": 15.0, "ol_s": 10.0},
        **parts,
    }


def test_report_ratios_are_against_mlserver_measured_in_the_same_run() -> None:
    r = report(
        mlqueue={**_load(1200.0), "predict": _load(1500.0)},
        mlserver=_load(1000.0),
        sync_fastapi=_load(150.0),
        naive_celery={"jobs_per_s": 300.0, "seq_p50_ms": 5.0, "seq_p99_ms": 7.0},
        in_process={
            "predict_1row_calls_per_s": 300.0,
            "fast_predict_1row_calls_per_s": 3000.0,
            "predict_10k_rows_per_s": 200000.0,
        },
    )
    ratios = table.ratios(r)
    assert ratios["predict_vs_mlserver"] == 1.5
    assert ratios["jobs_vs_mlserver"] == 1.2
    assert ratios["vs_sync_fastapi"] == 8.0
    assert ratios["vs_naive_celery"] == 4.0
    text, markdown = table.render(r)
    assert "MLServer 1.7.1, adaptive batching" in text
    assert "predict_vs_mlserver 1.5x (goal 1.25x: met)" in text
    assert "| mlqueue /predict (1 request per job) | 1,500 |" in markdown
    assert table.failures(r) == 0


def test_report_shows_a_failed_baseline_and_counts_mlqueue_errors() -> None:
    r = report(
        mlqueue={**_load(1200.0, errors=3), "predict": _load(1500.0)}, mlserver={"error": "x"}
    )
    assert table.ratios(r)["jobs_vs_mlserver"] is None
    text, _ = table.render(r)
    assert "mlserver FAILED: x" in text
    assert "MLServer 1.7.1, adaptive batching  " in text  # a row of dashes, still there
    assert "article sync FastAPI" not in text  # not run at all (--systems): no row
    assert table.failures(r) == 3 + 1


def test_report_open_loop_rows_and_wrong_answers() -> None:
    level = {
        "share": 0.5,
        "target_rate": 600.0,
        "achieved_rate": 598.0,
        "p50_ms": 5.0,
        "p99_ms": 20.0,
        "p999_ms": 30.0,
        "errors": 0,
        "mismatches": 2,
        "unfinished": 0,
        "send_lag_p99_ms": 1.0,
    }
    r = report(mlqueue={**_load(1200.0), "open_loop": [level], "predict": _load(1500.0)})
    rows = table.open_loop_rows(r)
    assert rows == [["mlqueue submit + poll", "50 %", 600.0, 598.0, 5.0, 20.0, 30.0, 2, 1.0]]
    assert table.failures(r) == 2


def test_head_to_head_rows_are_the_median_round_with_every_rounds_errors() -> None:
    rounds = [
        {"jobs_per_s": rate, "p99_ms": p99, "errors": errors, "mismatches": 0}
        for rate, p99, errors in ((900.0, 80.0, 1), (1100.0, 40.0, 0), (1000.0, 50.0, 2))
    ]
    row = median_round(rounds)
    assert (row["jobs_per_s"], row["p99_ms"]) == (1000.0, 50.0)
    assert row["errors"] == 3
    assert row["rounds_jobs_per_s"] == [900.0, 1100.0, 1000.0]


def test_head_to_head_pairs_the_rounds_in_time() -> None:
    def part(*rates: float) -> dict[str, Any]:
        return {"load": {"rounds_jobs_per_s": list(rates)}}

    r = {"mlqueue": {**part(1000, 1200), "predict": part(1500, 1800)}, "mlserver": part(1000, 1500)}
    assert round_ratios(r) == {"predict_vs_mlserver": [1.5, 1.2], "jobs_vs_mlserver": [1.0, 0.8]}
    assert round_ratios({"mlqueue": part(1000)}) == {}
    text, _ = table.render(report(ratios_per_round={"jobs_vs_mlserver": [0.9, 1.3, 1.1]}))
    assert "jobs_vs_mlserver 0.9x, 1.3x, 1.1x (median 1.1x)" in text
