"""`mlqueue`: the command line of the mlqueue HTTP API, on the SDK (click, rich for progress).

The gateway and the key come from `--url`/`--api-key`, else `MLQUEUE_URL`/`MLQUEUE_API_KEY`, else
the config file (client/config.py). Every command takes `--json` (machine output on stdout);
progress and errors go to stderr. Exit codes, by what went wrong (EXIT below).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click
from pydantic import BaseModel

from client import config, errors
from client.models import AliasTarget
from client.progress import Bars
from client.rows import BadRows, parse
from client.sdk import Client

EXIT = {
    "ok": 0,
    "failed": 1,  # the job failed or was cancelled, or the gateway refused the request
    "usage": 2,  # a wrong command line (click's own code)
    "unreachable": 3,  # no answer from the gateway (after retries)
    "not_found": 4,  # no such job (or not this key's)
    "unfinished": 5,  # the job did not end within --wait
    "unauthorized": 6,  # a missing or wrong API key
}
F = TypeVar("F", bound=Callable[..., Any])


class Exit(click.ClickException):
    """An error message on stderr; the subclass sets the exit code."""

    exit_code = EXIT["failed"]


class Unreachable(Exit):
    exit_code = EXIT["unreachable"]


class NotFound(Exit):
    exit_code = EXIT["not_found"]


class Unfinished(Exit):
    exit_code = EXIT["unfinished"]


class Unauthorized(Exit):
    exit_code = EXIT["unauthorized"]


def _exit_for(exc: errors.MlqueueError) -> Exit:
    if isinstance(exc, errors.Unreachable):
        return Unreachable(str(exc))
    if isinstance(exc, errors.NotFound):
        return NotFound(exc.detail)
    if isinstance(exc, errors.Unauthorized):
        return Unauthorized(f"{exc.detail} (set MLQUEUE_API_KEY or --api-key)")
    if isinstance(exc, errors.WaitTimeout):
        return Unfinished(f"{exc}; try again with a longer --wait")
    if isinstance(exc, errors.ApiError):
        return Exit(f"{exc.status}: {exc.detail}")
    return Exit(str(exc))


class Group(click.Group):
    """Turns the SDK's errors into messages and exit codes."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except errors.MlqueueError as exc:
            raise _exit_for(exc) from exc


def json_option(command: F) -> F:
    """`--json`: print the answer as JSON on stdout (for scripts) instead of text."""
    return click.option("--json", "as_json", is_flag=True, help="Print JSON on stdout.")(command)


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--url", envvar="MLQUEUE_URL", help="The gateway [env MLQUEUE_URL; config file].")
@click.option(
    "--api-key", envvar="MLQUEUE_API_KEY", help="Sent as a Bearer token [env MLQUEUE_API_KEY]."
)
@click.version_option("0.1.0", prog_name="mlqueue")
@click.pass_context
def cli(ctx: click.Context, url: str | None, api_key: str | None) -> None:
    """Submit prediction jobs to an mlqueue gateway and fetch their results.

    Exit codes: 0 ok, 1 failed or refused, 2 usage, 3 unreachable, 4 not found, 5 not finished
    within --wait, 6 unauthorized."""
    if ctx.resilient_parsing or ctx.invoked_subcommand in ("completion", "config"):
        return  # completing a word, or commands that need no gateway
    found = config.resolve(url, api_key, ctx)
    ctx.obj = ctx.with_resource(Client(found.url, found.api_key))


@cli.command()
@click.argument("source", type=click.File("r"), default="-")
@click.option("--model", default="default", show_default=True)
@click.option("--format", "form", type=click.Choice(["auto", "json", "csv"]), default="auto")
@click.option("--priority", type=int, default=None, help="Sent only when given.")
@click.option("--idempotency-key", default=None, help="The same key never makes a second job.")
@click.option("--wait", type=float, default=0, help="Seconds to wait for the predictions.")
@json_option
@click.pass_obj
def submit(
    client: Client,
    source: Any,
    model: str,
    form: str,
    priority: int | None,
    idempotency_key: str | None,
    wait: float,
    as_json: bool,
) -> None:
    """Submit rows from SOURCE (a file, or - for stdin): JSON (`[[...], ...]` or
    `{"data": ...}`) or CSV lines of numbers (a header line is skipped)."""
    try:
        rows = parse(source.read(), form)
    except BadRows as exc:
        raise click.BadParameter(str(exc), param_hint="SOURCE") from exc
    accepted = client.submit(rows, model, priority=priority, idempotency_key=idempotency_key)
    if wait <= 0:
        _show(accepted, as_json, f"{accepted.job_id} {accepted.status}")
        return
    result = client.result(accepted.job_id, wait)
    _show(result, as_json, "\n".join(f"{p:.6g}" for p in result.data))


@cli.command()
@click.argument("job_id")
@json_option
@click.pass_obj
def status(client: Client, job_id: str, as_json: bool) -> None:
    """A job's status and progress."""
    job = client.get(job_id)
    _show(job, as_json, _line(job))


@cli.command()
@click.option(
    "--status", type=click.Choice(["queued", "running", "succeeded", "failed", "cancelled"])
)
@click.option("--kind", type=click.Choice(["json", "csv"]))
@click.option("--limit", type=click.IntRange(1, 100), default=20, show_default=True)
@json_option
@click.pass_obj
def jobs(client: Client, status: str | None, kind: str | None, limit: int, as_json: bool) -> None:
    """Your newest jobs (needs a gateway that lists jobs: GET /v1/jobs)."""
    page = client.jobs(status=status, kind=kind, limit=limit)
    _show(page, as_json, "\n".join(_line(job) for job in page.jobs) or "no jobs")


@cli.command()
@click.argument("job_id")
@click.option("--timeout", type=float, default=None, help="Give up after this many seconds.")
@json_option
@click.pass_obj
def wait(client: Client, job_id: str, timeout: float | None, as_json: bool) -> None:
    """Wait for a job to end; exit 1 if it failed, 5 if it has not ended within --timeout."""
    job = client.wait(job_id, timeout)
    _show(job, as_json, _line(job))
    if job.status != "succeeded":
        raise errors.JobFailed(job)


@cli.command()
@click.argument("job_id")
@click.option("--wait", type=float, default=0, help="Seconds to wait for the job to end.")
@click.option("-o", "--output", type=click.File("wb"), default="-", help="Where to write it.")
@json_option
@click.pass_obj
def result(client: Client, job_id: str, wait: float, output: Any, as_json: bool) -> None:
    """A job's result: its predictions, or the CSV of a CSV job (exit 5 while it runs)."""
    job = client.wait(job_id, wait)
    if job.status != "succeeded":
        raise errors.JobFailed(job)
    if job.kind == "csv":
        client.download(job_id, output)
        return
    answer = client.result(job_id, 0)
    text = "\n".join(f"{p:.6g}" for p in answer.data)
    output.write(((answer.model_dump_json(indent=2) if as_json else text) + "\n").encode())


@cli.command()
@click.argument("job_id")
@json_option
@click.pass_obj
def cancel(client: Client, job_id: str, as_json: bool) -> None:
    """Cancel a queued or running job."""
    job = client.cancel(job_id)
    _show(job, as_json, _line(job))


MAX_ERROR_PAGES = 1000  # `--all` stops there even if a gateway kept naming a next page


@cli.command(name="errors")
@click.argument("job_id")
@json_option
@click.pass_obj
@click.option("--cursor", help="Start at this page (from a previous `next_cursor`).")
@click.option("--all", "every_page", is_flag=True, help="Follow `next_cursor` to the last page.")
def errors_(
    client: Client, job_id: str, as_json: bool, cursor: str | None, every_page: bool
) -> None:
    """The bad lines of a CSV job (skipped, or the ones that failed it), one page at a time."""
    found = client.errors(job_id, cursor=cursor)
    for _ in range(MAX_ERROR_PAGES if every_page else 0):
        if not found.next_cursor:
            break
        following = client.errors(job_id, cursor=found.next_cursor)
        found = following.model_copy(update={"errors": found.errors + following.errors})
    lines = [f"line {e.line}, column {e.column} ({e.name}): {e.msg}" for e in found.errors]
    if found.next_cursor and not as_json:
        lines.append(f"(more: mlqueue errors {job_id} --cursor {found.next_cursor})")
    _show(found, as_json, "\n".join(lines) or "no bad lines")


@cli.group(invoke_without_command=True)
@json_option
@click.pass_context
def models(ctx: click.Context, as_json: bool) -> None:
    """The models the gateway serves, with their versions and metrics; subcommands manage
    aliases."""
    if ctx.invoked_subcommand is not None:
        return
    client: Client = ctx.obj
    found = client.models()
    lines = [
        f"{m.name}:{m.version}{' (default)' if f'{m.name}:{m.version}' == found.default else ''}"
        f"  {m.n_features} features  "
        + "  ".join(f"{k}={v:.3f}" for k, v in sorted(m.metrics.items()))
        for m in found.models
    ]
    _show(found, as_json, "\n".join(lines))


@models.command()
@click.argument("name")
@click.argument("version", type=click.IntRange(min=1))
@click.option("--alias", default="production", show_default=True)
@json_option
@click.pass_obj
def promote(client: Client, name: str, version: int, alias: str, as_json: bool) -> None:
    """Point NAME@ALIAS at VERSION (admin key)."""
    _show(client.promote(name, version, alias), as_json, f"{name}@{alias} -> version {version}")


@models.command()
@click.argument("name")
@click.option("--alias", default="production", show_default=True)
@json_option
@click.pass_obj
def rollback(client: Client, name: str, alias: str, as_json: bool) -> None:
    """Point NAME@ALIAS back where it pointed before its last change (admin key)."""
    try:
        found = client.rollback(name, alias)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    _show(found, as_json, f"{name}@{alias} -> {_target(found.aliases[alias])}")


@models.command()
@click.argument("name")
@json_option
@click.pass_obj
def aliases(client: Client, name: str, as_json: bool) -> None:
    """The aliases of model NAME."""
    found = client.aliases(name)
    lines = [f"{name}@{a} -> {_target(t)}" for a, t in sorted(found.aliases.items())]
    _show(found, as_json, "\n".join(lines) or "no aliases")


@models.command()
@click.argument("name")
@json_option
@click.pass_obj
def history(client: Client, name: str, as_json: bool) -> None:
    """The alias changes of model NAME, newest first."""
    found = client.history(name)
    lines = [
        f"{c.at:%Y-%m-%d %H:%M:%S} {c.alias}: {_target(c.from_)} -> {_target(c.to)}"
        f" by {c.who or '-'}"
        for c in found.changes
    ]
    _show(found, as_json, "\n".join(lines) or "no changes")


def _target(target: AliasTarget | None) -> str:
    if target is None:
        return "(none)"
    text = (
        f"version {target.version}"
        if target.version is not None
        else "versions " + ", ".join(f"{v}:{w:g}" for v, w in (target.versions or {}).items())
    )
    return text + (f" shadow {target.shadow}" if target.shadow else "")


@cli.command()
@click.argument("source", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), required=True)
@click.option(
    "--model", default=None, help='A model name, "name:version", "name@alias" or "default".'
)
@click.option("--id-column", default=None, help="A column passed through to the output.")
@click.option("--on-error", type=click.Choice(["fail", "skip"]), default="fail", show_default=True)
@click.option("--ignore-extra", is_flag=True, help="Allow columns the model does not use.")
@json_option
@click.pass_obj
def score(
    client: Client,
    source: Path,
    output: Path,
    model: str | None,
    id_column: str | None,
    on_error: str,
    ignore_extra: bool,
    as_json: bool,
) -> None:
    """Score a CSV file: upload it, watch it being scored, download the predictions."""
    with Bars(quiet=as_json) as bars:
        job = client.score_csv(
            source,
            output,
            on_progress=bars.step,
            model=model,
            id_column=id_column,
            on_error=on_error,
            ignore_extra=ignore_extra,
        )
    skipped = job.progress.rows_skipped if job.progress else 0
    if as_json:
        _show(job, as_json, "")
        return
    # The predictions are in the file: the summary is a message, so stdout stays empty.
    click.echo(f"{job.n_rows} predictions written to {output} (job {job.job_id})", err=True)
    if skipped:
        click.echo(f"{skipped} bad lines skipped: see `mlqueue errors {job.job_id}`", err=True)


@cli.command(name="config")
@json_option
@click.pass_context
def config_(ctx: click.Context, as_json: bool) -> None:
    """The gateway URL and key in effect, and where each came from."""
    parent = ctx.parent
    assert parent is not None
    found = config.resolve(parent.params["url"], parent.params["api_key"], parent)
    body = {
        "file": str(config.path()),
        "url": found.url,
        "api_key": "set" if found.api_key else None,
        "sources": found.sources,
    }
    text = "\n".join(f"{k}: {v}" for k, v in body.items() if k != "sources")
    _show(body, as_json, text + f"\nfrom: {found.sources}")


@cli.command()
@click.argument("shell", type=click.Choice(["bash", "zsh", "fish"]))
def completion(shell: str) -> None:
    """Print the shell completion script: `eval "$(mlqueue completion bash)"` in ~/.bashrc."""
    from click.shell_completion import get_completion_class

    cls = get_completion_class(shell)
    assert cls is not None
    click.echo(cls(cli, {}, "mlqueue", "_MLQUEUE_COMPLETE").source())


def _line(job: Any) -> str:
    text = f"{job.job_id} {job.status} model={job.model}"
    if job.progress and job.progress.percent is not None:
        text += f" {job.progress.percent:.1f}%"
    if job.error:
        text += f" error: {job.error.message}"
    return text


def _show(answer: BaseModel | dict[str, Any], as_json: bool, text: str) -> None:
    if not as_json:
        click.echo(text)
    elif isinstance(answer, BaseModel):
        click.echo(answer.model_dump_json(indent=2))
    else:
        click.echo(json.dumps(answer, indent=2))


def main() -> None:
    """The console script's entry point."""
    sys.exit(cli.main(prog_name="mlqueue"))
