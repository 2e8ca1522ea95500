"""The web page at `/` and its static files (the browser test is in tests/integration)."""

from __future__ import annotations

from fastapi.testclient import TestClient

from tests.unit.test_metrics import scrape, value


def test_the_page_and_its_assets_are_served(client: TestClient) -> None:
    page = client.get("/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    for marker in (
        'id="score-form"',
        'id="models"',
        'id="jobs"',
        'id="queue-depth"',
        'href="/docs"',
    ):
        assert marker in page.text
    script = client.get("/static/app.js")
    assert script.status_code == 200
    assert "javascript" in script.headers["content-type"]
    # The page speaks the public API only.
    for path in ('"/v1/models"', '"/v1/jobs/csv"', "/v1/jobs/${", "Authorization", '"/readyz"'):
        assert path in script.text
    # Optional routes are feature-detected: the job listing and live events.
    for path in ('"/v1/jobs?limit=20"', "/events`", "status !== 405"):
        assert path in script.text
    assert client.get("/static/style.css").status_code == 200
    assert client.get("/static/nope.js").status_code == 404


def test_the_page_is_not_an_api_operation_and_static_files_are_one_route(
    client: TestClient,
) -> None:
    assert "/" not in client.get("/openapi.json").json()["paths"]
    before = scrape(client)
    client.get("/static/app.js")
    labels = {"method": "GET", "status": "200"}
    after = scrape(client)
    counted = [
        route
        for route in ("/static", "<unmatched>")
        if value(after, "mlqueue_http_requests_total", route=route, **labels)
        > value(before, "mlqueue_http_requests_total", route=route, **labels)
    ]
    assert counted == ["/static"]
