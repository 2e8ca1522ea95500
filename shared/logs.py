"""Structured logs: one JSON object per line, with the job's id and timings as fields.

Row data never goes into a log record; call sites pass ids, names, counts and durations only.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable
from typing import Any

import orjson

from shared import tracing

# Attributes every LogRecord has; anything else was passed through `extra=` and is a field.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}
# uvicorn's ANSI-coloured copy of its message: noise in a JSON line.
_DROPPED = _STANDARD | {"color_message"}
# uvicorn's access line: `'%s - "%s %s HTTP/%s" %d' % (client, method, path, http, status)`.
_ACCESS_FIELDS = ("client", "method", "path", "http_version", "status")


# Celery puts task arguments and return values (row data, predictions) into its log records.
_REDACTED = ("args", "kwargs", "return_value")
# A bad-input error quotes the offending cell; the job's record keeps it for its owner.
_INPUT_ERROR = "InvalidInput("
_INPUT_ERROR_REDACTED = "InvalidInput(<redacted: the job's error says where>)"


class RedactRowData(logging.Filter):
    """Replaces task arguments, results and bad-input messages in Celery's records."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, dict):
            record.args = {
                k: ("<redacted>" if k in _REDACTED else v) for k, v in record.args.items()
            }
            if str(record.args.get("exc", "")).startswith(_INPUT_ERROR):
                record.args["exc"] = _INPUT_ERROR_REDACTED
                record.exc_info = record.exc_text = None  # the traceback repeats the message
        data = getattr(record, "data", None)
        if isinstance(data, dict):
            kept = {k: v for k, v in data.items() if k not in _REDACTED}
            if str(kept.get("exc", "")).startswith(_INPUT_ERROR):
                kept.update(exc=_INPUT_ERROR_REDACTED, traceback=None)
            record.data = kept
        return True


class JsonFormatter(logging.Formatter):
    """Formats a record as a JSON line: ts, level, logger, event, plus the record's extras."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": round(record.created, 3),
            "level": record.levelname,
            "logger": record.name,
            "pid": record.process,
            "event": record.getMessage(),
        }
        if record.name == "uvicorn.access" and isinstance(record.args, tuple):
            line.update(zip(_ACCESS_FIELDS, record.args, strict=False))
        line.update((k, v) for k, v in vars(record).items() if k not in _DROPPED)
        if tracing.ON and (ids := tracing.log_ids(line.get("job_id"))):
            line["trace_id"], line["span_id"] = ids
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(line, default=str).decode()


def configure_logging(level: str, filters: Iterable[logging.Filter] = ()) -> None:
    """Send every logger's records to stderr as JSON lines at `level`, through `filters`."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(RedactRowData())
    for extra_filter in filters:
        handler.addFilter(extra_filter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
