"""The `mlqueue` command against the real system (a keyed gateway, a worker, Redis): settings from
the environment or the config file, `--json`, stdin, exit codes, and shell completion."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner, Result

from client.cli import EXIT, cli
from shared.schemas import ModelInfo
from tests.integration.conftest import API_KEYS, System, consumer_paused
from worker.sklearn_model import SklearnModel

pytestmark = pytest.mark.integration
ALICE = API_KEYS[0]
UNKNOWN = "6f1c1ad5-0b8e-4a59-8a47-3c5ad6d1e000"


@pytest.fixture
def env(keyed_system: System, tmp_path: Path) -> dict[str, str]:
    """The gateway and key from the environment; no config file."""
    return {
        "MLQUEUE_URL": keyed_system.base_url,
        "MLQUEUE_API_KEY": ALICE,
        "MLQUEUE_CONFIG": str(tmp_path / "absent.toml"),
    }


def run(env: dict[str, str], *args: str, stdin: str | None = None) -> Result:
    return CliRunner().invoke(cli, list(args), env=env, input=stdin, catch_exceptions=False)


@pytest.fixture(scope="module")
def estimator(model_dir: Path) -> SklearnModel:
    return SklearnModel.load(model_dir / "demo" / "1" / "model.skops")


def test_submit_csv_and_json_rows_from_stdin(
    env: dict[str, str],
    demo_info: ModelInfo,
    estimator: SklearnModel,
    diabetes_rows: list[list[float]],
) -> None:
    rows = diabetes_rows[:4]
    expected = pytest.approx(list(estimator.predict(np.asarray(rows))), rel=1e-12)
    text = io.StringIO()
    csv.writer(text).writerows([demo_info.feature_names, *rows])
    from_csv = run(env, "submit", "--wait", "20", "--json", stdin=text.getvalue())
    assert from_csv.exit_code == 0, from_csv.output
    assert json.loads(from_csv.stdout)["data"] == expected
    from_json = run(env, "submit", "--wait", "20", "--json", stdin=json.dumps({"data": rows}))
    assert json.loads(from_json.stdout)["data"] == expected
    # Without --wait: the accepted job, and its id is what `status` takes.
    accepted = json.loads(run(env, "submit", "--json", stdin=json.dumps(rows)).stdout)
    done = run(env, "wait", accepted["job_id"], "--timeout", "20", "--json")
    assert (done.exit_code, json.loads(done.stdout)["status"]) == (0, "succeeded")
    plain = run(env, "result", accepted["job_id"])
    assert [float(v) for v in plain.stdout.split()] == expected


def test_the_config_file_when_no_flag_or_variable_is_set(
    keyed_system: System, tmp_path: Path
) -> None:
    file = tmp_path / "config.toml"
    file.write_text(f'url = "{keyed_system.base_url}"\napi_key = "{ALICE}"\n')
    # None: unset in the command's environment, whatever the test process has.
    env: dict[str, str | None] = {
        "MLQUEUE_CONFIG": str(file),
        "MLQUEUE_URL": None,
        "MLQUEUE_API_KEY": None,
    }
    runner = CliRunner()
    models = runner.invoke(cli, ["models", "--json"], env=env, catch_exceptions=False)
    assert models.exit_code == 0, models.output
    assert json.loads(models.stdout)["models"][0]["name"] == "demo"
    shown = json.loads(runner.invoke(cli, ["config", "--json"], env=env).stdout)
    assert shown["sources"] == {"url": str(file), "api_key": str(file)}
    assert shown["api_key"] == "set"  # never printed
    # A flag beats the file.
    flagged = runner.invoke(cli, ["--url", "http://127.0.0.1:9", "config", "--json"], env=env)
    assert json.loads(flagged.stdout)["sources"]["url"] == "flag"


def test_exit_codes_tell_not_found_unauthorized_unreachable_failed_and_unfinished(
    env: dict[str, str], keyed_system: System, demo_info: ModelInfo, tmp_path: Path
) -> None:
    assert EXIT == {
        "ok": 0,
        "failed": 1,
        "usage": 2,
        "unreachable": 3,
        "not_found": 4,
        "unfinished": 5,
        "unauthorized": 6,
    }
    missing = run(env, "status", UNKNOWN)
    assert missing.exit_code == 4 and f"job {UNKNOWN} not found" in missing.stderr
    anonymous = run({**env, "MLQUEUE_API_KEY": ""}, "models")
    assert anonymous.exit_code == 6 and "MLQUEUE_API_KEY" in anonymous.stderr
    nowhere = run({**env, "MLQUEUE_URL": "http://127.0.0.1:9"}, "models")
    assert nowhere.exit_code == 3 and "cannot reach the gateway" in nowhere.stderr
    bad = tmp_path / "bad.csv"
    bad.write_text(",".join(demo_info.feature_names) + "\n" + "0.1,abc" + ",0" * 8 + "\n")
    failed = run(env, "score", str(bad), "-o", str(tmp_path / "out.csv"), "--json")
    assert failed.exit_code == 1 and "line 2, column 2 (sex)" in failed.stderr
    with consumer_paused(keyed_system):
        accepted = json.loads(run(env, "submit", "--json", stdin="[[0,0,0,0,0,0,0,0,0,0]]").stdout)
        still = run(env, "result", accepted["job_id"], "--wait", "0.5")
        assert still.exit_code == 5 and "still queued" in still.stderr
        cancelled = run(env, "cancel", accepted["job_id"], "--json")
        assert json.loads(cancelled.stdout)["status"] == "cancelled"
    after = run(env, "result", accepted["job_id"])
    assert after.exit_code == 1 and "cancelled" in after.stderr
    usage = run(env, "submit", stdin="not rows")
    assert usage.exit_code == 2 and "SOURCE" in usage.stderr


def test_score_json_output_and_csv_result(
    env: dict[str, str],
    demo_info: ModelInfo,
    estimator: SklearnModel,
    diabetes_rows: list[list[float]],
    tmp_path: Path,
) -> None:
    rows = diabetes_rows[:50]
    source, out = tmp_path / "in.csv", tmp_path / "out.csv"
    with source.open("w", newline="") as f:
        csv.writer(f).writerows([demo_info.feature_names, *rows])
    scored = run(env, "score", str(source), "-o", str(out), "--json")
    assert scored.exit_code == 0, scored.output
    job = json.loads(scored.stdout)
    assert (job["status"], job["n_rows"], job["kind"]) == ("succeeded", 50, "csv")
    predictions = [float(r[0]) for r in list(csv.reader(io.StringIO(out.read_text())))[1:]]
    assert predictions == pytest.approx(list(estimator.predict(np.asarray(rows))), rel=1e-12)
    again = run(env, "result", job["job_id"])  # a CSV job's result is its CSV
    assert again.stdout == out.read_text()


def test_shell_completion(env: dict[str, str]) -> None:
    script = run(env, "completion", "bash")
    assert script.exit_code == 0 and "_MLQUEUE_COMPLETE=bash_complete" in script.stdout
    # What the shell does on <TAB>: run the command with the completion variables set.
    completed = subprocess.run(
        [sys.executable, "-c", "from client.cli import main; main()"],
        env={
            **os.environ,
            "_MLQUEUE_COMPLETE": "bash_complete",
            "COMP_WORDS": "mlqueue sta",
            "COMP_CWORD": "1",
        },
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert "plain,status" in completed.stdout.splitlines()
