"""CSV header detection on the real system: feature names that look like numbers (years) are a
header, and a header naming a column twice is a 422 naming it."""

from __future__ import annotations

import csv
import io
import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from worker.sklearn_model import SklearnModel

pytestmark = pytest.mark.integration
YEARS = [str(year) for year in range(2010, 2020)]


@pytest.fixture(scope="module")
def years_model(model_dir: Path) -> Iterator[str]:
    """The demo model under the name "years", its ten features named 2010 ... 2019."""
    folder = model_dir / "years" / "1"
    shutil.copytree(model_dir / "demo" / "1", folder)
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest.update(name="years", feature_names=YEARS)
    (folder / "manifest.json").write_text(json.dumps(manifest))
    yield "years"
    shutil.rmtree(model_dir / "years")


def test_feature_names_that_look_numeric_are_the_header(
    http: httpx.Client, years_model: str, model_dir: Path, diabetes_rows: list[list[float]]
) -> None:
    rows = diabetes_rows[:30]
    order = [9, 3, 0, 7, 1, 8, 2, 6, 5, 4]  # any order of the names
    lines = [",".join(YEARS[i] for i in order)]
    lines += [",".join(repr(row[i]) for i in order) for row in rows]
    data = ("\n".join(lines) + "\n").encode()
    response = http.post(
        "/v1/jobs/csv",
        data={"model": years_model},
        files={"file": ("in.csv", data, "text/csv")},
    )
    assert response.status_code == 202, response.text
    answer = http.get(f"/v1/jobs/{response.json()['job_id']}/result", params={"wait": 30})
    assert answer.status_code == 200, answer.text
    out = list(csv.reader(io.StringIO(answer.text)))
    estimator = SklearnModel.load(model_dir / "demo" / "1" / "model.skops")
    expected = estimator.predict(np.asarray(rows)).tolist()
    assert len(out) == 31  # the header line was not scored as a row
    assert [float(r[-1]) for r in out[1:]] == expected


@pytest.mark.parametrize("path", ["/v1/jobs/csv", "/predict_csv"])
def test_a_header_naming_a_column_twice_is_422_naming_it(http: httpx.Client, path: str) -> None:
    names = "age,sex,bmi,bp,s1,s2,s3,s4,s5,s6,s2"
    data = f"{names}\n" + ",".join(["0.1"] * 11) + "\n"
    field = "file" if path == "/v1/jobs/csv" else "csv_file"
    response = http.post(path, files={field: ("in.csv", data.encode(), "text/csv")})
    assert response.status_code == 422, response.text
    assert response.json()["detail"].startswith("line 1: header names ['s2'] appear more than")
