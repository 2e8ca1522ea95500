"""The command-line client stays a pure HTTP client."""

from __future__ import annotations

import subprocess
import sys

from click.testing import CliRunner

from client.cli import cli

SERVER_MODULES = (
    "fastapi",
    "starlette",
    "celery",
    "redis",
    "shared",
    "gateway",
    "worker",
    "devrun",
)


def test_the_sdk_and_cli_import_no_server_module() -> None:
    code = (
        "import sys, client, client.cli; "
        f"print([m for m in sys.modules if m.startswith({SERVER_MODULES!r})])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_an_unreachable_gateway_is_a_clear_error() -> None:
    result = CliRunner().invoke(cli, ["--url", "http://127.0.0.1:9", "status", "x"])
    assert result.exit_code == 3
    assert "cannot reach the gateway at http://127.0.0.1:9" in result.output
