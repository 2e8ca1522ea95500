"""CSV header detection: the model's own feature names are a header even when they look like
numbers, and a header naming a column twice is refused, naming it."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from shared.csvformat import layout_for, parse_small
from shared.errors import InvalidInput

YEARS = ["2015", "2016", "2017", "2018"]


def test_numeric_looking_feature_names_are_a_header_in_any_order() -> None:
    rows, _ = parse_small(b"2017,2015,2018,2016\n3,1,4,2\n", YEARS, 10)
    assert rows == [[1.0, 2.0, 3.0, 4.0]]
    rows, ids = parse_small(b"2016,id,2015,2017,2018\n2,a,1,3,4\n", YEARS, 10, id_column="id")
    assert (rows, ids) == ([[1.0, 2.0, 3.0, 4.0]], ["a"])


def test_a_numeric_line_that_is_not_the_feature_names_is_data() -> None:
    layout = layout_for(["2015", "2016", "2017", "2019"], YEARS, None, ignore_extra=False)
    assert not layout.has_header


@pytest.mark.parametrize(
    ("header", "says"),
    [
        (b"2015,2016,2017,2018,2016", "['2016']"),
        (b"age,sex,age,bmi,sex", "['age', 'sex']"),
    ],
)
def test_duplicate_header_names_are_refused_naming_them(header: bytes, says: str) -> None:
    features = YEARS if header.startswith(b"2015") else ["age", "sex", "bmi"]
    with pytest.raises(InvalidInput, match="line 1: header names") as info:
        parse_small(header + b"\n" + b",".join([b"1"] * header.count(b",")) + b",1\n", features, 10)
    assert says in info.value.message


def test_predict_csv_with_a_duplicate_header_is_422(client: TestClient) -> None:
    names = "age,sex,bmi,bp,s1,s2,s3,s4,s5,s6,bmi"
    csv = f"{names}\n" + ",".join(["0.1"] * 11) + "\n"
    response = client.post("/predict_csv", files={"csv_file": ("d.csv", csv.encode(), "text/csv")})
    assert response.status_code == 422, response.text
    assert response.json()["detail"].startswith("line 1: header names ['bmi'] appear more than")
