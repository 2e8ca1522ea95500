"""Where the CLI finds the gateway and the key: flags, then MLQUEUE_* variables, then a file.

The file is TOML in the user's config dir (click.get_app_dir: ~/.config/mlqueue/config.toml on
Linux, ~/Library/Application Support/mlqueue on macOS, %APPDATA%\\mlqueue on Windows), or the
path in MLQUEUE_CONFIG:

    url = "https://mlqueue.example.com"
    api_key = "mlq_..."
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass
from pathlib import Path

import click

from client.sdk import DEFAULT_URL

KEYS = ("url", "api_key")


@dataclass(frozen=True)
class Config:
    """The effective settings and where each came from."""

    url: str
    api_key: str | None
    sources: dict[str, str]


def path() -> Path:
    """The config file's path (it need not exist)."""
    given = os.environ.get("MLQUEUE_CONFIG")
    return Path(given) if given else Path(click.get_app_dir("mlqueue")) / "config.toml"


def read_file(file: Path) -> dict[str, str]:
    """The file's `url` and `api_key` (an empty dict when there is no file)."""
    try:
        data = tomllib.loads(file.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise click.UsageError(f"cannot read the config file {file}: {exc}") from exc
    unknown = sorted(set(data) - set(KEYS))
    if unknown:
        raise click.UsageError(f"{file}: unknown keys {unknown}; known: {list(KEYS)}")
    return {k: str(v) for k, v in data.items()}


def resolve(url: str | None, api_key: str | None, ctx: click.Context) -> Config:
    """Flags or environment variables (click resolves both), else the file, else the default."""
    from_file = read_file(path())
    sources: dict[str, str] = {}
    values: dict[str, str | None] = {"url": url, "api_key": api_key}
    for name in KEYS:
        source = ctx.get_parameter_source(name)
        if values[name] is not None and source is not None:
            sources[name] = "environment" if source.name == "ENVIRONMENT" else "flag"
        elif name in from_file:
            values[name], sources[name] = from_file[name], str(path())
        else:
            sources[name] = "default"
    return Config(values["url"] or DEFAULT_URL, values["api_key"], sources)
