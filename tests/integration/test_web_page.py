"""The web page at `/` in a real headless Chromium against the live gateway and worker.

Upload a CSV, watch both progress bars reach 100 %, download the predictions (equal to
model.predict), and see a bad file's error with its line number. Screenshots go to
test-artifacts/.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from shared.schemas import ModelInfo
from tests.integration.browser import Page, chromium
from tests.integration.conftest import API_KEYS, System
from worker.sklearn_model import SklearnModel

pytestmark = pytest.mark.integration
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"


@pytest.fixture(scope="module")
def page(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Page]:
    with chromium(tmp_path_factory.mktemp("chromium") / "chromium.log") as page:
        yield page


def open_home(page: Page, system: System) -> Page:
    page.goto(f"{system.base_url}/")
    page.wait_for("document.querySelectorAll('#models tbody tr').length > 0")
    return page


@pytest.fixture
def home(page: Page, system: System) -> Page:
    return open_home(page, system)


@pytest.fixture
def csv_home(page: Page, csv_system: System) -> Page:
    """The page of a system that cuts CSV files into 100-line chunks: a real progress bar."""
    return open_home(page, csv_system)


def test_the_page_lists_the_models_with_their_metrics(home: Page, demo_info: ModelInfo) -> None:
    rows = home.evaluate(
        "[...document.querySelectorAll('#models tbody tr')]"
        ".map(tr => [...tr.cells].map(td => td.textContent))"
    )
    assert rows == [
        [
            "demo",
            "1",
            "demo, default",  # the newest version of the default model
            "10",
            f"{demo_info.metrics['r2']:.3f}",
            f"{demo_info.metrics['mae']:.3f}",
            demo_info.created_at.date().isoformat(),
        ]
    ]
    options = home.evaluate("[...document.querySelectorAll('#model option')].map(o => o.value)")
    assert options == ["default", "demo:1"]
    home.screenshot(ARTIFACTS / "web-page-models.png")


def test_the_page_shows_queue_depth_and_workers_from_readyz(home: Page, system: System) -> None:
    checks = httpx.get(f"{system.base_url}/readyz", timeout=5).json()["checks"]
    shown = home.wait_for(
        "document.getElementById('workers').textContent !== '…' && "
        "['ready', 'queue-depth', 'workers'].map(id => document.getElementById(id).textContent)"
    )
    assert shown == ["ready", str(checks["queue_depth"]), str(checks["workers"])]
    assert checks["workers"] == 1


def test_every_control_has_a_label_and_the_keyboard_reaches_the_form(home: Page) -> None:
    unlabelled = home.evaluate(
        "[...document.querySelectorAll('input, select, button, progress')]"
        ".filter(e => !e.labels?.length && !e.getAttribute('aria-label') && e.tagName !== 'BUTTON')"
        ".map(e => e.id || e.outerHTML)"
    )
    assert unlabelled == []
    # The first Tab reaches the skip link; Enter follows it to the upload form.
    home.evaluate("document.activeElement.blur()")
    for kind in ("rawKeyDown", "keyUp"):
        home.send(
            "Input.dispatchKeyEvent", type=kind, key="Tab", code="Tab", windowsVirtualKeyCode=9
        )
    assert home.evaluate("document.activeElement.className") == "skip"
    home.send("Input.dispatchKeyEvent", type="char", key="Enter", text="\r")
    home.send("Input.dispatchKeyEvent", type="rawKeyDown", key="Enter", windowsVirtualKeyCode=13)
    home.send("Input.dispatchKeyEvent", type="keyUp", key="Enter", windowsVirtualKeyCode=13)
    home.wait_for("location.hash === '#score'", timeout=5)


def listing_available(system: System) -> bool:
    """Whether this gateway lists jobs (GET /v1/jobs): the page uses it when it is there."""
    status = httpx.get(f"{system.base_url}/v1/jobs", timeout=5).status_code
    assert status in (200, 404, 405)
    return status == 200


def test_upload_progress_and_download(
    csv_home: Page,
    csv_system: System,
    demo_info: ModelInfo,
    model_dir: Path,
    diabetes_rows: list[list[float]],
    tmp_path: Path,
) -> None:
    home = csv_home
    rows = (diabetes_rows * 5)[:2000]
    upload = tmp_path / "customers.csv"
    with upload.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["customer", *demo_info.feature_names])
        writer.writerows([f"c{i}", *row] for i, row in enumerate(rows))
    home.set_files("#file", upload)
    home.evaluate("document.getElementById('model').value = 'demo:1'")
    home.evaluate("document.getElementById('id-column').value = 'customer'")
    home.evaluate("document.getElementById('submit').click()")
    stage = home.wait_for(
        "['done', 'failed'].includes(document.body.dataset.stage) && document.body.dataset.stage",
        timeout=60,
    )
    error = home.evaluate("document.getElementById('error').textContent")
    home.screenshot(ARTIFACTS / "web-page-scored.png")
    assert (stage, error) == ("done", "")
    bars = home.evaluate("['upload-bar', 'score-bar'].map(id => document.getElementById(id).value)")
    assert bars == [100, 100]
    assert home.evaluate("document.getElementById('score-pct').textContent") == "100 %"
    # The link as the browser follows it.
    text = home.evaluate(
        "fetch(document.getElementById('download').href).then(r => r.ok ? r.text() : r.status)"
    )
    table = list(csv.reader(io.StringIO(text)))
    assert table[0] == ["customer", "prediction"]
    assert [r[0] for r in table[1:]] == [f"c{i}" for i in range(len(rows))]
    model = SklearnModel.load(model_dir / "demo" / "1" / "model.skops")
    expected = model.predict(np.asarray(rows))
    assert [float(r[1]) for r in table[1:]] == pytest.approx(list(expected), rel=1e-12)
    # The job in the recent jobs table, finished, with its result link.
    job_id = home.evaluate("document.getElementById('job-id').textContent").removeprefix("job ")
    row = home.wait_for(
        f"(r => r && r.dataset.status === 'succeeded' && [...r.cells].map(c => c.textContent))"
        f"(document.querySelector('#jobs tr[data-job=\"{job_id}\"]'))"
    )
    assert row == [job_id[:8], "csv", "demo:1", "succeeded", " 100 %", row[5], "CSV"]
    note = home.evaluate("document.getElementById('jobs-note').hidden")
    assert note is listing_available(csv_system)
    home.screenshot(ARTIFACTS / "web-page-jobs.png")
    # The job as operators see it: its lines in both logs, and the gateway's counters.
    gateway = [line for line in read(csv_system.workdir / "gateway.log") if job_id in line]
    worker = [line for line in read(csv_system.worker_log) if job_id in line]
    assert any('"event":"csv upload accepted"' in line for line in gateway)
    assert sum('"event":"chunk scored"' in line for line in worker) == 20
    assert any('"event":"job succeeded"' in line for line in worker)
    metrics = httpx.get(f"{csv_system.base_url}/metrics", timeout=5).text
    assert 'mlqueue_rows_submitted_total{kind="csv",model="demo"} 2000.0' in metrics


def read(log: Path) -> list[str]:
    return log.read_text().splitlines()


@pytest.mark.parametrize(
    ("case", "where"),
    [
        ("bad-value", "line 4, column 3 (bmi): non-numeric value 'abc'"),  # the job fails
        ("bad-header", "line 1: unexpected columns"),  # the upload is refused (422)
    ],
)
def test_a_bad_file_shows_its_line_number(
    csv_home: Page,
    demo_info: ModelInfo,
    diabetes_rows: list[list[float]],
    tmp_path: Path,
    case: str,
    where: str,
) -> None:
    lines = [",".join(demo_info.feature_names)]
    lines += [",".join(str(v) for v in row) for row in diabetes_rows[:5]]
    if case == "bad-value":
        cells = lines[3].split(",")
        lines[3] = ",".join([*cells[:2], "abc", *cells[3:]])
    else:
        lines = [f"{line},0" for line in lines]
        lines[0] = lines[0].removesuffix(",0") + ",colour"
    bad = tmp_path / f"{case}.csv"
    bad.write_text("\n".join(lines) + "\n")
    home = csv_home
    home.set_files("#file", bad)
    home.evaluate("document.getElementById('submit').click()")
    message = home.wait_for(
        "document.body.dataset.stage === 'failed' && document.getElementById('error').textContent",
        timeout=30,
    )
    home.screenshot(ARTIFACTS / f"web-page-{case}.png")
    assert message.startswith(f"Error: {where}")
    assert home.evaluate("document.getElementById('download').hidden") is True
    # The same place as a list item under "Bad lines" (or "Refused" for the upload).
    listed = home.wait_for(
        "[...document.querySelectorAll('#line-errors li')].map(li => li.textContent)"
        ".filter(t => t).length && "
        "[...document.querySelectorAll('#line-errors li')].map(li => li.textContent)"
    )
    assert listed[0].startswith(where)


STAGE_DONE_OR_FAILED = (
    "['done', 'failed'].includes(document.body.dataset.stage) && document.body.dataset.stage"
)


def test_a_real_401_asks_for_the_key_and_the_key_is_used(
    page: Page,
    keyed_system: System,
    demo_info: ModelInfo,
    model_dir: Path,
    diabetes_rows: list[list[float]],
    tmp_path: Path,
) -> None:
    """Against a gateway started with API keys: no faked answers."""
    page.goto(f"{keyed_system.base_url}/")
    try:
        page.wait_for("!document.getElementById('key-section').hidden")
        error = page.wait_for("document.getElementById('models-error').textContent")
        assert error == "a valid API key is required: Authorization: Bearer <key>"
        page.evaluate(
            f"const key = document.getElementById('api-key'); key.value = '{API_KEYS[0]}';"
            "key.dispatchEvent(new Event('change'))"
        )
        page.wait_for("document.querySelectorAll('#models tbody tr').length > 0")
        assert page.evaluate("document.getElementById('models-error').hidden") is True
        assert page.evaluate("sessionStorage.getItem('mlqueue-api-key')") == API_KEYS[0]
        # Score a file with the key, then download it: a keyed download is fetched with the key
        # and saved from memory (the blob handed to the browser is captured here).
        rows = diabetes_rows[:7]
        upload = tmp_path / "keyed.csv"
        upload.write_text("\n".join(",".join(map(str, r)) for r in rows) + "\n")
        page.set_files("#file", upload)
        page.evaluate("document.getElementById('submit').click()")
        stage = page.wait_for(STAGE_DONE_OR_FAILED, timeout=60)
        assert (stage, page.evaluate("document.getElementById('error').textContent")) == (
            "done",
            "",
        )
        anonymous = page.evaluate(
            "fetch(document.getElementById('download').href).then(r => r.status)"
        )
        assert anonymous == 401
        page.evaluate(
            "window.__blobs = []; const made = URL.createObjectURL;"
            "URL.createObjectURL = b => { window.__blobs.push(b); return made(b); };"
            "document.getElementById('download').click()"
        )
        text = page.wait_for("window.__blobs.length && window.__blobs[0].text()")
        model = SklearnModel.load(model_dir / "demo" / "1" / "model.skops")
        got = [float(v) for v in text.split()[1:]]
        assert got == pytest.approx(list(model.predict(np.asarray(rows))), rel=1e-12)
        page.screenshot(ARTIFACTS / "web-page-keyed.png")
    finally:
        page.evaluate("sessionStorage.clear()")
