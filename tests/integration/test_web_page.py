"""The web page at `/` in a real headless Chromium against the live gateway and worker."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from shared.schemas import ModelInfo
from tests.integration.browser import Page, chromium
from tests.integration.conftest import System

pytestmark = pytest.mark.integration
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"


@pytest.fixture(scope="module")
def page(system: System) -> Iterator[Page]:
    with chromium(system.workdir / "chromium.log") as page:
        yield page


@pytest.fixture
def home(page: Page, system: System) -> Page:
    page.goto(f"{system.base_url}/")
    page.wait_for("document.querySelectorAll('#models tbody tr').length > 0")
    return page


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
