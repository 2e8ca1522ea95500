"""OpenAPI examples of the alias routes (beside `gateway.examples`, which holds the jobs' ones)."""

from __future__ import annotations

from typing import Any

from gateway.examples import answer

TARGETS: dict[str, Any] = {
    "promote": {"summary": "Point the alias at one version", "value": {"version": 3}},
    "canary": {
        "summary": "Send 10 % of the jobs to version 4 (picked by job id)",
        "value": {"versions": {"3": 0.9, "4": 0.1}},
    },
    "shadow": {
        "summary": "Answer with 3; version 4 scores a copy of the rows afterwards",
        "value": {"version": 3, "shadow": 4},
    },
}
ALIASES = {
    "name": "demo",
    "aliases": {"production": {"version": 3}, "staging": {"versions": {"3": 0.9, "4": 0.1}}},
}
HISTORY = {
    "name": "demo",
    "changes": [
        {
            "alias": "production",
            "who": "4f2a9c1d0e8b7a65",
            "at": "2026-12-01T02:40:00Z",
            "from": {"version": 2},
            "to": {"version": 3},
        }
    ],
}
ALIASES_ANSWER: dict[int | str, dict[str, Any]] = {200: answer("The model's aliases.", ALIASES)}
HISTORY_ANSWER: dict[int | str, dict[str, Any]] = {
    200: answer("The model's alias changes, newest first.", HISTORY)
}
