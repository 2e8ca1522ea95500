"""Hostile or careless requests: each gets a clear 4xx problem, never a 500."""

from __future__ import annotations

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

JSON = {"content-type": "application/json"}
ROW = b"[1,2,3,4,5,6,7,8,9,0]"


@pytest.fixture
def client(app: FastAPI) -> TestClient:
    # A server error must show up as a 500 answer here, as a real client would see it.
    return TestClient(app, raise_server_exceptions=False)


def post(client: TestClient, body: bytes, headers: dict[str, str] | None = None) -> tuple[int, str]:
    response = client.post("/v1/jobs", content=body, headers=JSON if headers is None else headers)
    assert response.headers["content-type"] in ("application/json", "application/problem+json")
    return response.status_code, response.json().get("detail", "")


@pytest.mark.parametrize(
    "content_type",
    ["text/plain", "application/xml", "application/x-www-form-urlencoded", "image/png", None],
)
def test_a_body_that_is_not_json_is_415(client: TestClient, content_type: str | None) -> None:
    headers = {"content-type": content_type} if content_type else {}
    status, detail = post(client, b'{"data": [' + ROW + b"]}", headers)
    assert status == 415
    assert "application/json" in detail


@pytest.mark.parametrize("content_type", ["application/json; charset=utf-8", "application/x+json"])
def test_json_media_types_are_accepted(client: TestClient, content_type: str) -> None:
    assert post(client, b'{"data": [' + ROW + b"]}", {"content-type": content_type})[0] == 202


@pytest.mark.parametrize(
    ("body", "status", "says"),
    [
        (b'{"data": [' + ROW, 422, "body, character"),  # truncated
        (b"{not json}", 422, "invalid JSON"),
        (b"", 422, "body: Field required"),
        (b"null", 422, "body"),
        (b"[]", 422, "body"),
        (b'"data"', 422, "body"),
        (b'{"data": [[' + b"9" * 5000 + b",2,3,4,5,6,7,8,9,0]]}", 400, "parsing the body"),
        (
            b'{"data": [[1e999,2,3,4,5,6,7,8,9,0]]}',
            422,
            "row 0, column 0: non-finite value inf",
        ),
        (b'{"data": [["\\ud800",2,3,4,5,6,7,8,9,0]]}', 422, "row 0, column 0"),
        (b'{"data": [["\xff\xfe",2,3,4,5,6,7,8,9,0]]}', 400, "parsing the body"),
        (b'{"data": [' + ROW + b'], "model": "\xe2\x80\xae\\u0000x"}', 422, "model: String"),
        (b'{"data": [' + ROW + b'], "extra": 1}', 422, "extra: Extra inputs"),
        (b'{"data": ' + b"[" * 5000 + b"]" * 5000 + b"}", 400, "parsing the body"),
        (b'{"data": ' + b"[" * 200 + b"]" * 200 + b"}", 422, "data: row 0"),
    ],
)
def test_malformed_json_is_a_clear_4xx(
    client: TestClient, body: bytes, status: int, says: str
) -> None:
    got, detail = post(client, body)
    assert (got, says in detail) == (status, True), detail


def test_a_utf8_bom_is_tolerated(client: TestClient) -> None:
    assert post(client, b'\xef\xbb\xbf{"data": [' + ROW + b"]}")[0] == 202


def test_huge_json_is_413_before_it_is_read(client: TestClient) -> None:
    body = b'{"data": [' + b",".join([ROW] * 5000) + b"]}"  # > the 64 KiB of the test settings
    assert post(client, body) == (413, "request body exceeds the limit of 65536 bytes")
    status, _ = post(client, b"{}", {**JSON, "content-length": "1" + "0" * 30})
    assert status == 413


@pytest.mark.parametrize(
    "headers",
    [
        {"content-length": "abc"},
        {"content-length": "-1"},
    ],
)
def test_a_lying_content_length_is_4xx(client: TestClient, headers: dict[str, str]) -> None:
    status, _ = post(client, b"{}", {**JSON, **headers})
    assert 400 <= status < 500


@pytest.mark.parametrize(
    "path",
    [
        "/v1/jobs/%00",
        "/v1/jobs/%F0%9F%98%80",
        "/v1/jobs/..%2F..%2Fetc%2Fpasswd",
        "/v1/jobs/" + "a" * 300,
        "/v1/jobs/x/result?wait=abc",
        "/v1/jobs/x/result?wait=nan",
        "/v1/jobs/x/result?wait=-1",
        "/v1/jobs/x/result?wait=1e999",
    ],
)
def test_garbage_ids_and_parameters_are_4xx(client: TestClient, path: str) -> None:
    response = client.get(path)
    assert response.status_code in (404, 422), response.text
    assert response.json()["title"] in ("JobNotFound", "NotFound", "InvalidInput")


def test_unknown_routes_and_methods_are_problems(client: TestClient) -> None:
    assert client.get("/nope").json()["status"] == 404
    response = client.put("/v1/jobs")
    assert response.status_code == 405 and response.json()["title"] == "MethodNotAllowed"


@pytest.mark.parametrize(
    ("body", "headers"),
    [
        (b"--zz\r\nfoo", {"content-type": "multipart/form-data"}),  # no boundary
        (b"--zz\r\nfoo", {"content-type": "multipart/form-data; boundary=zz"}),
        (b"1,2,3", {"content-type": "text/csv"}),
        (b"csv_file=1,2,3", {"content-type": "application/x-www-form-urlencoded"}),
    ],
)
def test_a_broken_csv_upload_is_4xx(
    client: TestClient, body: bytes, headers: dict[str, str]
) -> None:
    response = client.post("/predict_csv", content=body, headers=headers)
    assert response.status_code in (400, 422), response.text
    assert response.json()["detail"]


def test_many_and_odd_headers_are_tolerated(client: TestClient) -> None:
    headers = {f"x-h{i}": "\u00e9\U0001f600".encode() * 50 for i in range(100)}
    response = client.post(
        "/v1/jobs", content=b'{"data": [' + ROW + b"]}", headers={**JSON, **headers}
    )
    assert response.status_code == 202


MALFORMED_FORMS = {
    "junk after the boundary line": b"--BOUNDARY\r\n[]--BOUNDARY--",
    "a header line without a colon": b"--BOUNDARY\r\nno colon here\r\n\r\n1,2\r\n--BOUNDARY--\r\n",
    "an oversized part header": b"--BOUNDARY\r\nContent-Disposition: form-data; name=file; x="
    + b"a" * 10_000
    + b"\r\n\r\n1,2\r\n--BOUNDARY--\r\n",
    "a broken boundary line": b"--BOUNDARYxx\r\n\r\n--BOUNDARY--\r\n",
}


@pytest.mark.parametrize("path", ["/v1/jobs/csv", "/predict_csv"])
@pytest.mark.parametrize("body", MALFORMED_FORMS.values(), ids=MALFORMED_FORMS.keys())
def test_a_malformed_multipart_body_is_400_naming_the_defect(
    client: TestClient, path: str, body: bytes
) -> None:
    headers = {"content-type": "multipart/form-data; boundary=BOUNDARY"}
    response = client.post(path, content=body, headers=headers)
    assert response.status_code == 400, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert "multipart" in response.json()["detail"].lower()
