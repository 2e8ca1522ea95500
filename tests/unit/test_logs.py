"""No row data in logs: Celery's records are redacted before they are formatted."""

from __future__ import annotations

import json
import logging
import sys

from shared.errors import InvalidInput
from shared.logs import JsonFormatter, RedactRowData


def celery_failure(exc: Exception) -> logging.LogRecord:
    """A record shaped like the one celery.app.trace logs for a failed task."""
    try:
        raise exc
    except Exception:
        exc_info = sys.exc_info()
    context = {
        "id": "t1",
        "name": "mlqueue.score_chunk",
        "exc": repr(exc),
        "traceback": "tb",
        "args": "([[0.123456789]],)",
        "kwargs": "{'rows': [[0.123456789]]}",
        "description": "raised unexpected",
    }
    record = logging.LogRecord(
        "celery.app.trace",
        logging.ERROR,
        __file__,
        1,
        "Task %(name)s[%(id)s] %(description)s: %(exc)s",
        None,
        exc_info,
    )
    record.args = context  # as logging does for a single mapping argument
    record.data = dict(context)
    return record


def formatted(record: logging.LogRecord) -> str:
    assert RedactRowData().filter(record)
    return JsonFormatter().format(record)


def test_a_bad_input_error_does_not_reach_the_log_with_its_cell() -> None:
    line = formatted(
        celery_failure(InvalidInput("line 3, column 3 (bmi): non-numeric value 'x7q'"))
    )
    assert "x7q" not in line
    assert "0.123456789" not in line
    event = json.loads(line)
    assert event["event"] == (
        "Task mlqueue.score_chunk[t1] raised unexpected: "
        "InvalidInput(<redacted: the job's error says where>)"
    )
    assert "exc" not in event  # no traceback repeating the message


def test_other_errors_keep_their_message_but_not_the_rows() -> None:
    line = formatted(celery_failure(RuntimeError("model file unreadable")))
    assert "model file unreadable" in line
    assert "0.123456789" not in line
