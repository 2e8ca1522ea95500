"""`mlqueue`: the command line of the mlqueue HTTP API (click for commands, rich for progress).

The gateway URL comes from `--url` or `MLQUEUE_URL`, the API key from `--api-key` or
`MLQUEUE_API_KEY`. Output is JSON on stdout; progress bars and errors go to stderr. Exit codes: 0
done, 1 the server refused or the job failed (its `detail` on stderr), 2 usage, 3 unreachable.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click
import httpx
from rich.console import Console, RenderableType
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    ProgressColumn,
    Task,
    TaskProgressColumn,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.text import Text

from client.api import ApiError, Client

err = Console(stderr=True)


class Failed(click.ClickException):
    """A refusal or a failed job: the message goes to stderr, the exit code is 1."""


class Unreachable(click.ClickException):
    """The gateway cannot be reached."""

    exit_code = 3


class Group(click.Group):
    """Turns API and connection errors into clean messages and exit codes."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ApiError as exc:
            raise Failed(f"{exc.status}: {exc.detail}") from exc
        except httpx.TransportError as exc:
            url = ctx.params.get("url")
            raise Unreachable(f"cannot reach the gateway at {url}: {exc}") from exc


@click.group(cls=Group)
@click.option("--url", envvar="MLQUEUE_URL", default="http://127.0.0.1:8000", show_default=True)
@click.option("--api-key", envvar="MLQUEUE_API_KEY", default=None, help="Sent as a Bearer token.")
@click.pass_context
def cli(ctx: click.Context, url: str, api_key: str | None) -> None:
    """Submit prediction jobs to an mlqueue gateway and fetch their results."""
    ctx.obj = ctx.with_resource(_closing(Client(url, api_key)))


@cli.command()
@click.argument("source", type=click.File("r"), default="-")
@click.option("--model", default="default", show_default=True)
@click.option("--wait", type=float, default=0, help="Seconds to wait for the result.")
@click.pass_obj
def submit(client: Client, source: Any, model: str, wait: float) -> None:
    """Submit JSON rows from SOURCE (a file or - for stdin): `[[...], ...]` or `{"data": ...}`."""
    try:
        body = json.load(source)
    except json.JSONDecodeError as exc:
        raise click.BadParameter(f"not JSON: {exc}", param_hint="SOURCE") from exc
    rows = body.get("data") if isinstance(body, dict) else body
    accepted = client.submit(rows, model)
    if wait <= 0:
        _print(accepted)
        return
    response = client.result(accepted["job_id"], wait)
    _print(response.json())


@cli.command()
@click.argument("job_id")
@click.pass_obj
def status(client: Client, job_id: str) -> None:
    """A job's status and progress."""
    _print(client.status(job_id))


@cli.command()
@click.argument("job_id")
@click.option("--wait", type=float, default=0, help="Seconds to wait for the job to end.")
@click.option("-o", "--output", type=click.File("wb"), default="-", help="Where to write it.")
@click.pass_obj
def result(client: Client, job_id: str, wait: float, output: Any) -> None:
    """A job's result: JSON, or the CSV of a CSV job. Exit 1 while it is not finished."""
    response = client.result(job_id, wait)
    if response.status_code == 202:
        raise Failed(f"job {job_id} is {response.json()['status']}; try again with --wait")
    output.write(response.content)


@cli.command()
@click.argument("job_id")
@click.pass_obj
def cancel(client: Client, job_id: str) -> None:
    """Cancel a queued or running job."""
    _print(client.cancel(job_id))


@cli.command()
@click.argument("job_id")
@click.pass_obj
def errors(client: Client, job_id: str) -> None:
    """The bad lines of a CSV job (skipped, or the ones that failed it)."""
    _print(client.errors(job_id))


@cli.command()
@click.pass_obj
def models(client: Client) -> None:
    """The models the gateway serves, with their features and metrics."""
    _print(client.models())


@cli.command()
@click.argument("source", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), required=True)
@click.option("--model", default=None, help='A model name, "name:version" or "default".')
@click.option("--id-column", default=None, help="A column passed through to the output.")
@click.option("--on-error", type=click.Choice(["fail", "skip"]), default="fail", show_default=True)
@click.option("--ignore-extra", is_flag=True, help="Allow columns the model does not use.")
@click.pass_obj
def score(
    client: Client,
    source: Path,
    output: Path,
    model: str | None,
    id_column: str | None,
    on_error: str,
    ignore_extra: bool,
) -> None:
    """Score a CSV file: upload it, watch it being scored, download the predictions."""
    options = {
        "model": model or "",
        "id_column": id_column or "",
        "on_error": on_error,
        "ignore_extra": "true" if ignore_extra else "",
    }
    with _progress() as bars:
        sending = bars.add_task("upload", total=source.stat().st_size)
        try:
            job = client.upload_csv(source, options, lambda n: bars.advance(sending, n))
        except (httpx.WriteError, httpx.RemoteProtocolError) as exc:
            # The gateway answers a refusal (413 above its upload limit) before the body has
            # been sent, then closes the connection: the client only sees its write fail.
            raise Failed(
                f"the gateway closed the connection during the upload ({exc}); the file may "
                "exceed its upload limit (MLQUEUE_MAX_UPLOAD_BYTES)"
            ) from exc
        scoring = bars.add_task("scoring", total=job.get("n_rows"), unit="rows")
        view = client.wait(job["job_id"], lambda v: _show(bars, scoring, v))
        if view["status"] != "succeeded":
            raise Failed(_why(view))
        fetching = bars.add_task("download", total=None)
        with output.open("wb") as out:
            client.download(job["job_id"], out, lambda n: bars.advance(fetching, n))
    skipped = (view.get("progress") or {}).get("rows_skipped", 0)
    err.print(f"{view['n_rows']} predictions written to {output} (job {job['job_id']})")
    if skipped:
        err.print(f"{skipped} bad lines skipped: see `mlqueue errors {job['job_id']}`")


def _progress() -> Progress:
    return Progress(
        TextColumn("{task.description:>9}"),
        BarColumn(),
        TaskProgressColumn(),
        _Amount(DownloadColumn()),
        _Amount(TransferSpeedColumn()),
        TimeRemainingColumn(),
        console=err,
        transient=False,
    )


class _Amount(ProgressColumn):
    """A byte column for transfers, and rows (and rows/s) for the scoring bar."""

    def __init__(self, for_bytes: ProgressColumn) -> None:
        super().__init__()
        self.for_bytes = for_bytes

    def render(self, task: Task) -> RenderableType:
        if task.fields.get("unit") != "rows":
            return self.for_bytes.render(task)
        if isinstance(self.for_bytes, TransferSpeedColumn):
            return Text(
                f"{task.speed:,.0f} rows/s" if task.speed else "", style="progress.data.speed"
            )
        total = "?" if task.total is None else f"{int(task.total):,}"
        return Text(f"{int(task.completed):,}/{total} rows", style="progress.download")


def _show(bars: Progress, task: Any, view: dict[str, Any]) -> None:
    progress = view.get("progress") or {}
    bars.update(task, completed=progress.get("rows_done", 0), total=progress.get("rows_total"))


def _why(view: dict[str, Any]) -> str:
    error = view.get("error") or {}
    return f"job {view['job_id']} {view['status']}: {error.get('message', 'no reason given')}"


def _print(body: Any) -> None:
    click.echo(json.dumps(body, indent=2))


class _closing:
    """A context manager that closes the client when the command ends."""

    def __init__(self, client: Client) -> None:
        self.client = client

    def __enter__(self) -> Client:
        return self.client

    def __exit__(self, *_: object) -> None:
        self.client.close()


def main() -> None:
    """The console script's entry point."""
    sys.exit(cli.main(prog_name="mlqueue"))
