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
from tests.integration.conftest import System
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
            "10",
            f"{demo_info.metrics['r2']:.3f}",
            f"{demo_info.metrics['mae']:.3f}",
            demo_info.created_at.date().isoformat(),
        ]
    ]
    options = home.evaluate("[...document.querySelectorAll('#model option')].map(o => o.value)")
    assert options == ["default", "demo:1"]
    home.screenshot(ARTIFACTS / "web-page-models.png")


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
    model = SklearnModel.load(model_dir / "demo" / "1" / "model.joblib")
    expected = model.predict(np.asarray(rows))
    assert [float(r[1]) for r in table[1:]] == pytest.approx(list(expected), rel=1e-12)
    # The job as operators see it: its lines in both logs, and the gateway's counters.
    job_id = home.evaluate("document.getElementById('job-id').textContent").removeprefix("job ")
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


# Stands in for issue 6's API keys in the browser: /v1/models answers 401 without a bearer key,
# and every request's Authorization header is recorded.
KEYED_GATEWAY = """
window.__auth = [];
const realFetch = window.fetch.bind(window);
window.fetch = (url, options = {}) => {
  const auth = (options.headers || {}).Authorization || null;
  window.__auth.push([String(url), auth]);
  if (String(url).endsWith('/v1/models') && auth !== 'Bearer s3cret') {
    return Promise.resolve(new Response(
      JSON.stringify({title: 'Unauthorized', status: 401, detail: 'a valid API key is required'}),
      {status: 401, headers: {'content-type': 'application/problem+json'}}));
  }
  return realFetch(url, options);
};
"""


def test_a_401_asks_for_the_key_and_the_key_is_sent(page: Page, system: System) -> None:
    script = page.send("Page.addScriptToEvaluateOnNewDocument", source=KEYED_GATEWAY)
    try:
        page.goto(f"{system.base_url}/")
        page.wait_for("!document.getElementById('key-section').hidden")
        error = page.wait_for("document.getElementById('models-error').textContent")
        assert error == "a valid API key is required"
        page.evaluate(
            "const key = document.getElementById('api-key'); key.value = 's3cret';"
            "key.dispatchEvent(new Event('change'))"
        )
        page.wait_for("document.querySelectorAll('#models tbody tr').length > 0")
        assert page.evaluate("document.getElementById('models-error').hidden") is True
        assert page.evaluate("window.__auth.at(-1)") == ["/v1/models", "Bearer s3cret"]
        assert page.evaluate("sessionStorage.getItem('mlqueue-api-key')") == "s3cret"
    finally:
        page.send("Page.removeScriptToEvaluateOnNewDocument", identifier=script["identifier"])
        page.evaluate("sessionStorage.clear()")
