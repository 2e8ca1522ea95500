"""A test that needs a missing tool skips on a laptop and fails under CI=true."""

from __future__ import annotations

import pytest

from tests import needs


def test_a_missing_tool_skips_naming_it_and_how_to_get_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "")
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="chromium not found on PATH; apt-get it"):
        needs.binary("chromium", how="apt-get it")


def test_under_ci_a_missing_tool_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "")
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI=true: this test must run"):
        needs.binary("docker", how="install Docker")


def test_a_tool_on_path_is_found(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "true")
    assert needs.binary("no-such-tool", "sh", how="-").endswith("/sh")
