"""Aliases, canary, shadow and the bounded model cache on the real system (Redis, Celery workers,
uvicorn gateways as processes).

The system has API keys with one admin key, one gateway process (a second is started to measure
how fast an alias change spreads), and workers that keep at most 3 model versions per process.
Model `lc` has versions 1..4 (different forests, so every answer tells which version gave it);
model `many` has 20 versions for the memory test.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import statistics
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import joblib
import numpy as np
import pytest
from celery import Celery
from prometheus_client.parser import text_string_to_metric_families
from sklearn.ensemble import RandomForestRegressor

from devrun import processes
from shared.aliases import AliasTarget
from shared.jobstore import WORKERS
from tests.integration.conftest import System, consumer_paused, running_system, wait_for
from tests.integration.models import N_FEATURES, add_model

pytestmark = pytest.mark.integration

ADMIN, USER = "mlq_test_lifecycle_admin_0123", "mlq_test_lifecycle_user_0123"
MAX_LOADED = 3
MANY = 20


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def _forest(seed: int, trees: int = 10, rows: int = 400) -> RandomForestRegressor:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(rows, N_FEATURES))
    y = X @ rng.normal(size=N_FEATURES) + seed
    return RandomForestRegressor(n_estimators=trees, random_state=seed).fit(X, y)


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("lifecycle-models")
    for version in range(1, 5):
        add_model(root, "lc", _forest(version), str(version))
    add_model(root, "demo", _forest(0), "1")  # the default model, unused here
    for version in range(1, MANY + 1):  # ~1.5 MB each on disk, several times that loaded
        add_model(root, "many", _forest(100 + version, trees=20, rows=3000), str(version))
    return root


@pytest.fixture(scope="module")
def lifecycle(tmp_path_factory: pytest.TempPathFactory, registry: Path) -> Iterator[System]:
    with running_system(
        tmp_path_factory.mktemp("lifecycle-system"),
        registry,
        db_offset=12,
        api_keys=_digest(USER),
        admin_keys=_digest(ADMIN),
        gateway_workers="1",
        max_loaded_models=str(MAX_LOADED),
    ) as system:
        yield system


def _client(system: System, key: str = ADMIN, base_url: str | None = None) -> httpx.Client:
    return httpx.Client(
        base_url=base_url or system.base_url,
        headers={"Authorization": f"Bearer {key}"},
        timeout=30,
    )


@pytest.fixture
def admin(lifecycle: System) -> Iterator[httpx.Client]:
    with _client(lifecycle) as client:
        yield client


def _expected(registry: Path, name: str, version: str, rows: list[list[float]]) -> list[float]:
    model = joblib.load(registry / name / version / "model.joblib")
    return [float(v) for v in model.predict(np.asarray(rows, dtype=np.float64))]


def _rows(n: int, seed: int = 7) -> list[list[float]]:
    return np.random.default_rng(seed).normal(size=(n, N_FEATURES)).round(6).tolist()


def _run(client: httpx.Client, rows: list[list[float]], model: str) -> tuple[str, str, list[float]]:
    """Submit, wait; (job id, version on the job, predictions)."""
    job_id = _submit(client, rows, model)
    return job_id, *_answer(client, job_id)


def _submit(client: httpx.Client, rows: list[list[float]], model: str) -> str:
    accepted = client.post("/v1/jobs", json={"data": rows, "model": model})
    assert accepted.status_code == 202, accepted.text
    return str(accepted.json()["job_id"])


def _answer(client: httpx.Client, job_id: str) -> tuple[str, list[float]]:
    """(version on the job, predictions) once it has succeeded."""
    result = client.get(f"/v1/jobs/{job_id}/result", params={"wait": 20})
    assert result.status_code == 200, result.text
    view = client.get(f"/v1/jobs/{job_id}").json()
    assert view["status"] == "succeeded", view
    return view["version"], result.json()["data"]


def _put(client: httpx.Client, alias: str, body: dict[str, Any], name: str = "lc") -> None:
    response = client.put(f"/v1/models/{name}/aliases/{alias}", json=body)
    assert response.status_code == 200, response.text


def test_promote_pins_jobs_and_history_names_the_admin_key(
    lifecycle: System, admin: httpx.Client, registry: Path
) -> None:
    rows = _rows(5)
    with _client(lifecycle, USER) as user:
        refused = user.put("/v1/models/lc/aliases/production", json={"version": 1})
        assert refused.status_code == 403, refused.text
        _put(admin, "production", {"version": 2})
        _, version, predictions = _run(user, rows, "lc@production")
        assert version == "2" and predictions == _expected(registry, "lc", "2", rows)
        _put(admin, "production", {"version": 3})
        _, version, predictions = _run(user, rows, "lc@production")
        assert version == "3" and predictions == _expected(registry, "lc", "3", rows)
        unknown = user.post("/v1/jobs", json={"data": rows, "model": "lc@nope"})
        assert unknown.status_code == 422 and "no alias 'nope'" in unknown.json()["detail"]
        changes = user.get("/v1/models/lc/history").json()["changes"]
    latest = changes[0]
    assert (latest["alias"], latest["from"], latest["to"]) == (
        "production",
        {"version": 2},
        {"version": 3},
    )
    assert latest["who"] == _digest(ADMIN)[:16]


def test_a_job_keeps_the_version_it_was_pinned_to_at_submit(
    lifecycle: System, admin: httpx.Client, registry: Path
) -> None:
    rows = _rows(3, seed=8)
    _put(admin, "pinned", {"version": 1})
    with consumer_paused(lifecycle):
        accepted = admin.post("/v1/jobs", json={"data": rows, "model": "lc@pinned"})
        assert accepted.status_code == 202, accepted.text
        _put(admin, "pinned", {"version": 4})  # while the job waits in the queue
    job_id = accepted.json()["job_id"]
    result = admin.get(f"/v1/jobs/{job_id}/result", params={"wait": 20}).json()
    assert admin.get(f"/v1/jobs/{job_id}").json()["version"] == "1"
    assert result["data"] == _expected(registry, "lc", "1", rows)


def test_a_direct_celery_task_resolves_the_alias_in_the_worker(
    lifecycle: System, admin: httpx.Client, registry: Path
) -> None:
    rows = _rows(4, seed=9)
    _put(admin, "direct", {"version": 4})
    app = Celery(broker=lifecycle.redis_url, backend=lifecycle.redis_url)
    try:
        task = app.send_task(
            "mlqueue.predict", kwargs={"rows": rows, "model": "lc@direct"}, queue="mlqueue"
        )
        answer = task.get(timeout=20)
        missing = app.send_task(
            "mlqueue.predict", kwargs={"rows": rows, "model": "lc@absent"}, queue="mlqueue"
        )
        with pytest.raises(Exception, match="no alias 'absent'"):
            missing.get(timeout=20)
    finally:
        app.close()
    assert answer["version"] == "4"
    assert answer["predictions"] == _expected(registry, "lc", "4", rows)


def test_a_canary_splits_by_job_id_and_records_the_version(
    lifecycle: System, admin: httpx.Client, registry: Path
) -> None:
    split = {"versions": {"1": 0.5, "2": 0.5}}
    _put(admin, "canary", split)
    target = AliasTarget.model_validate(split)
    rows = _rows(2, seed=10)
    seen = set()
    for _ in range(16):
        job_id, version, predictions = _run(admin, rows, "lc@canary")
        assert version == str(target.choose(job_id))
        assert predictions == _expected(registry, "lc", version, rows)
        seen.add(version)
    assert seen == {"1", "2"}  # 2 ** -15 that 16 fair picks agree


def _metric(text: str, name: str, **labels: str) -> float:
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items())
    )


def test_a_shadow_scores_after_the_answer_and_exports_the_difference(
    lifecycle: System, admin: httpx.Client, registry: Path
) -> None:
    _put(admin, "shadowed", {"version": 1, "shadow": 3})
    labels = {"model": "lc", "version": "1", "shadow_version": "3"}
    before = httpx.get(lifecycle.worker_metrics_url, timeout=5).text
    rows = _rows(6, seed=11)
    _, version, predictions = _run(admin, rows, "lc@shadowed")
    assert version == "1" and predictions == _expected(registry, "lc", "1", rows)
    shadow = _expected(registry, "lc", "3", rows)
    want = float(np.abs(np.asarray(shadow) - np.asarray(predictions)).sum())
    assert want > 0  # the versions differ, so the comparison has something to show

    def delta(name: str) -> float:
        now = httpx.get(lifecycle.worker_metrics_url, timeout=5).text
        return _metric(now, name, **labels) - _metric(before, name, **labels)

    wait_for(lambda: delta("mlqueue_worker_shadow_rows_total") == len(rows))
    assert delta("mlqueue_worker_shadow_abs_difference_total") == pytest.approx(want, rel=1e-9)
    mean = delta("mlqueue_worker_shadow_abs_difference_total") / len(rows)
    print(f"\nshadow lc:1 vs lc:3 over {len(rows)} rows: mean |diff| {mean:.4f}")
    # A task sent directly to Celery for the alias is shadowed too.
    app = Celery(broker=lifecycle.redis_url, backend=lifecycle.redis_url)
    try:
        task = app.send_task(
            "mlqueue.predict", kwargs={"rows": rows[:2], "model": "lc@shadowed"}, queue="mlqueue"
        )
        assert task.get(timeout=20)["predictions"] == predictions[:2]
    finally:
        app.close()
    wait_for(lambda: delta("mlqueue_worker_shadow_rows_total") == len(rows) + 2)
    direct = float(np.abs(np.asarray(shadow[:2]) - np.asarray(predictions[:2])).sum())
    assert delta("mlqueue_worker_shadow_abs_difference_total") == pytest.approx(want + direct)


def _rss_kib(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    match = re.search(r"^VmRSS:\s+(\d+) kB", status, re.MULTILINE)
    return int(match.group(1)) if match else 0


def _children_rss(system: System) -> dict[int, int]:
    assert system.worker is not None
    return {pid: _rss_kib(pid) for pid in processes.children(system.worker.pid)}


def test_twenty_versions_round_robin_with_a_limit_of_three_keep_memory_bounded(
    lifecycle: System, admin: httpx.Client, registry: Path
) -> None:
    rows = _rows(8, seed=12)
    expected = {str(v): _expected(registry, "many", str(v), rows) for v in range(1, MANY + 1)}
    one_model = _loaded_size(registry)
    _run(admin, rows, "many:1")  # both children warm: numpy, sklearn and one forest loaded
    _run(admin, rows, "many:2")
    start = _children_rss(lifecycle)
    peaks: list[dict[int, int]] = []  # after each round through the 20 versions
    for _ in range(2):
        peak = dict(peaks[-1] if peaks else start)
        for first in range(1, MANY + 1, 2):  # two at once, so that both children take versions
            pair = [f"many:{first}", f"many:{first + 1}"]
            job_ids = [_submit(admin, rows, spec) for spec in pair]
            for spec, job_id in zip(pair, job_ids, strict=True):
                version, predictions = _answer(admin, job_id)
                assert f"many:{version}" == spec and predictions == expected[version]
            for pid, rss in _children_rss(lifecycle).items():
                peak[pid] = max(peak.get(pid, 0), rss)
        peaks.append(peak)
    first_round, second_round = (
        {pid: 1024 * (p[pid] - start.get(pid, p[pid])) for pid in p} for p in peaks
    )
    metrics = httpx.get(lifecycle.worker_metrics_url, timeout=5).text
    evictions = _metric(metrics, "mlqueue_worker_model_evictions_total", model="many")
    loaded = _metric(metrics, "mlqueue_worker_models_loaded")

    def mib(values: dict[int, int]) -> list[int]:
        return sorted(v // 1024**2 for v in values.values())

    print(
        f"\nLRU: one 'many' version is {one_model // 1024} KiB on disk; children RSS at start "
        f"{sorted(v // 1024 for v in start.values())} MiB; growth after round 1 "
        f"{mib(first_round)} MiB, after round 2 {mib(second_round)} MiB; holding all 20 "
        f"versions would take ~{MANY * one_model // 1024**2} MiB per child; evictions "
        f"{evictions:g}; loaded now {loaded:g}; load average {os.getloadavg()[0]:.2f}"
    )
    assert evictions >= 2 * MANY - 2 * MAX_LOADED * len(start)  # every child cycles through
    assert loaded <= MAX_LOADED * len(start)
    # Bounded (loosely: the allocator keeps some freed memory): the second round through the
    # same 20 versions adds almost nothing, and the whole growth stays far below 20 versions.
    for pid, grown in second_round.items():
        assert grown - first_round.get(pid, 0) < 3 * one_model, (pid, grown)
        assert grown < MANY * one_model * 0.6, (pid, grown)


def _loaded_size(registry: Path) -> int:
    """Bytes one `many` version takes loaded: its pickle's size, which for a forest is about the
    size of its tree arrays (tracemalloc misses them: scikit-learn allocates them in C)."""
    return (registry / "many" / "1" / "model.joblib").stat().st_size


def test_alias_changes_reach_two_gateways_and_two_workers(
    lifecycle: System, admin: httpx.Client, registry: Path
) -> None:
    """Measures (prints) how long after a PUT on gateway 1 gateway 2 and the workers follow."""
    port = processes.free_port()
    env = {**lifecycle.env, "MLQUEUE_PORT": str(port)}
    workdir = lifecycle.workdir
    second = processes.spawn(processes.gateway_argv(), env, log=workdir / "gateway2.log")
    worker_env = {
        **lifecycle.env,
        "MLQUEUE_WORKER_METRICS_PORT": "0",
        "MLQUEUE_METRICS_DIR": str(workdir / "metrics2"),
    }
    argv = [*processes.worker_argv(1), "-n", "w2@%h"]
    worker2 = processes.spawn(argv, worker_env, log=workdir / "worker2.log")
    app = Celery(broker=lifecycle.redis_url, backend=lifecycle.redis_url)
    try:
        node = f"w2@{os.uname().nodename}"
        processes.wait_until(
            lambda: lifecycle.redis().zscore(WORKERS, node) is not None, 60, node, worker2
        )
        other = f"http://127.0.0.1:{port}"
        processes.wait_until(lambda: _up(other), 60, "gateway 2", second)
        gateway_ms, worker_ms = [], []
        with _client(lifecycle, base_url=other) as gateway2:
            for i in range(6):
                old, new = (1, 2) if i % 2 == 0 else (2, 1)
                _put(admin, "spread", {"version": old})
                time.sleep(0.5)  # everyone on `old`
                if i < 3:  # gateway 2 follows by itself (its own task polls Redis)
                    changed = time.monotonic()
                    _put(admin, "spread", {"version": new})
                    gateway_ms.append(_until_gateway(gateway2, str(new), changed))
                else:  # workers check when asked: keep them busy across the change
                    worker_ms.append(
                        _until_workers(
                            app, new, lambda v=new: _put(admin, "spread", {"version": v})
                        )
                    )
        print(
            f"\nalias propagation (PUT on gateway 1): gateway 2 {_ms(gateway_ms)}; both workers "
            f"(direct tasks, worst stale answer) {_ms(worker_ms)}; load average "
            f"{os.getloadavg()[0]:.2f}"
        )
    finally:
        app.close()
        processes.stop(second)
        processes.stop(worker2)


def _up(base_url: str) -> bool:
    try:
        return httpx.get(f"{base_url}/readyz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def _ms(values: list[float]) -> str:
    return f"median {statistics.median(values):.0f} ms, max {max(values):.0f} ms"


def _until_gateway(client: httpx.Client, version: str, since: float) -> float:
    """Submit on `client` until its job is pinned to `version`; ms from `since` to that submit."""
    deadline = since + 10
    while time.monotonic() < deadline:
        sent = time.monotonic()
        accepted = client.post("/v1/jobs", json={"data": _rows(1), "model": "lc@spread"})
        job_id = accepted.json()["job_id"]
        if client.get(f"/v1/jobs/{job_id}").json()["version"] == version:
            return 1000 * (sent - since)
        time.sleep(0.01)
    raise AssertionError("gateway 2 did not follow the alias within 10 s")


def _until_workers(app: Celery, version: int, change: Callable[[], None]) -> float:
    """Send direct tasks for `lc@spread` every 20 ms, `change` the alias after 0.3 s of them,
    and go on until 20 answers in a row have `version` (both workers take some); ms from the
    change to the send of the last task answered with the old version (0 when none was)."""
    started = time.monotonic()
    changed = stale_sent = float("inf")
    in_a_row = 0
    pending: list[tuple[float, Any]] = []
    while in_a_row < 20:
        now = time.monotonic()
        assert now < started + 15, "the workers did not follow the alias within 15 s"
        if changed == float("inf") and now > started + 0.3:
            change()
            changed = stale_sent = time.monotonic()
        kwargs = {"rows": _rows(1), "model": "lc@spread"}
        pending.append((now, app.send_task("mlqueue.predict", kwargs=kwargs, queue="mlqueue")))
        time.sleep(0.02)
        while pending and pending[0][1].ready():
            at, task = pending.pop(0)
            if at < changed:
                continue
            if task.get(timeout=5)["version"] == str(version):
                in_a_row += 1
            else:
                in_a_row = 0
                stale_sent = max(stale_sent, at)
    for _, task in pending:
        task.forget()
    return 1000 * (stale_sent - changed)


def test_the_cli_promotes_and_rolls_back(lifecycle: System, tmp_path: Path) -> None:
    from click.testing import CliRunner

    from client.cli import cli

    env = {
        "MLQUEUE_URL": lifecycle.base_url,
        "MLQUEUE_API_KEY": ADMIN,
        "MLQUEUE_CONFIG": str(tmp_path / "none.toml"),
    }

    def run(*args: str) -> str:
        result = CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False)
        assert result.exit_code == 0, result.output
        return result.output

    assert run("models", "promote", "lc", "3", "--alias", "cli") == "lc@cli -> version 3\n"
    assert run("models", "promote", "lc", "4", "--alias", "cli") == "lc@cli -> version 4\n"
    assert run("models", "rollback", "lc", "--alias", "cli") == "lc@cli -> version 3\n"
    with _client(lifecycle, USER) as user:  # what the gateway now resolves
        _, version, _ = _run(user, _rows(1), "lc@cli")
    assert version == "3"
    history = json.loads(run("models", "history", "lc", "--json"))["changes"]
    assert [(c["from"], c["to"]) for c in history if c["alias"] == "cli"] == [
        ({"version": 4}, {"version": 3}),
        ({"version": 3}, {"version": 4}),
        (None, {"version": 3}),
    ]
    assert "lc@cli -> version 3" in run("models", "aliases", "lc")
    assert "lc:1" in run("models")  # the bare group still lists the models
    user_env = {**env, "MLQUEUE_API_KEY": USER}
    refused = CliRunner().invoke(cli, ["models", "promote", "lc", "1"], env=user_env)
    assert refused.exit_code != 0 and "admin key" in refused.output


def test_a_csv_job_for_an_alias_is_pinned_and_scored_by_that_version(
    admin: httpx.Client, registry: Path
) -> None:
    _put(admin, "csv", {"version": 2})
    rows = _rows(5, seed=13)
    data = "".join(",".join(repr(v) for v in row) + "\n" for row in rows).encode()
    form = {"model": "lc@csv"}
    accepted = admin.post("/v1/jobs/csv", data=form, files={"file": ("in.csv", data, "text/csv")})
    assert accepted.status_code == 202, accepted.text
    job_id = accepted.json()["job_id"]
    result = admin.get(f"/v1/jobs/{job_id}/result", params={"wait": 20})
    assert result.status_code == 200, result.text
    assert admin.get(f"/v1/jobs/{job_id}").json()["version"] == "2"
    got = [float(line) for line in result.text.splitlines()[1:]]
    assert got == pytest.approx(_expected(registry, "lc", "2", rows), rel=1e-12)
