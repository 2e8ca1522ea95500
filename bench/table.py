"""`make bench`'s report: ratios against the baselines, the tables as text and as Markdown.

Works on the JSON report that `bench.bench` writes, so an older results file can be re-rendered
(`python -m bench.table bench/results/bench-....json`). A system that was not run, or failed,
shows as a row of dashes with its error below the table; ratios need both sides.
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path
from typing import Any

Cell = float | int | str | None

# Issue 16's goals, shown beside the measured ratios (not asserted: a loaded box misses them).
TARGETS = {"predict_vs_mlserver": 1.25, "jobs_vs_mlserver": 1.0}
SYSTEM_KEYS = (
    "mlqueue",
    "mlserver",
    "sync_fastapi",
    "naive_celery",
    "in_process",
    "direct_mlqueue",
)
"""The report's parts, each an error record instead when its system failed."""
DIRECT_TARGET = 3.0  # direct mlqueue.predict over naive Celery, for every sender count
TARGET_P99_MS = 50.0


def _part(report: dict[str, Any], *path: str) -> dict[str, Any] | None:
    """report[path...] unless missing or an error record."""
    node: Any = report
    for key in path:
        if not isinstance(node, dict) or key not in node:
            return None
        node = node[key]
    return node if isinstance(node, dict) and "error" not in node else None


def _rate(part: dict[str, Any] | None) -> float | None:
    if part is None:
        return None
    if "load" in part:
        return float(part["load"]["jobs_per_s"])
    if "jobs_per_s" in part:
        return float(part["jobs_per_s"])
    return float(part["predict_1row_calls_per_s"]) if "predict_1row_calls_per_s" in part else None


def _over(ours: float | None, theirs: float | None) -> float | None:
    return round(ours / theirs, 2) if ours is not None and theirs else None


def rates(report: dict[str, Any]) -> dict[str, float | None]:
    """Jobs/s of every row, by row key."""
    return {
        "mlqueue_predict": _rate(_part(report, "mlqueue", "predict")),
        "mlqueue_v2": _rate(_part(report, "mlqueue", "v2")),
        "mlqueue_jobs": _rate(_part(report, "mlqueue")),
        "mlserver": _rate(_part(report, "mlserver")),
        "sync_fastapi": _rate(_part(report, "sync_fastapi")),
        "naive_celery": _rate(_part(report, "naive_celery")),
        "in_process": _rate(_part(report, "in_process")),
    }


def ratios(report: dict[str, Any]) -> dict[str, float | None]:
    """mlqueue over each baseline (submit + poll unless named `predict_`), same run."""
    r = rates(report)
    jobs, predict = r["mlqueue_jobs"], r["mlqueue_predict"]
    return {
        "vs_sync_fastapi": _over(jobs, r["sync_fastapi"]),
        "vs_naive_celery": _over(jobs, r["naive_celery"]),
        "vs_in_process_1row_predict": _over(jobs, r["in_process"]),
        "jobs_vs_mlserver": _over(jobs, r["mlserver"]),
        "predict_vs_mlserver": _over(predict, r["mlserver"]),
        "predict_vs_sync_fastapi": _over(predict, r["sync_fastapi"]),
        "predict_vs_naive_celery": _over(predict, r["naive_celery"]),
        "v2_vs_predict": _over(r["mlqueue_v2"], predict),
        "v2_vs_mlserver": _over(r["mlqueue_v2"], r["mlserver"]),
        **direct_ratios(report),
    }


HTTP_ROWS = (
    ("mlqueue /predict (1 request per job)", ("mlqueue", "predict"), "mlqueue_predict"),
    ("mlqueue V2 infer (1 request per job)", ("mlqueue", "v2"), "mlqueue_v2"),
    ("mlqueue submit + long-poll result", ("mlqueue",), "mlqueue_jobs"),
    ("MLServer 1.7.1, adaptive batching", ("mlserver",), "mlserver"),
    ("article sync FastAPI /predict", ("sync_fastapi",), "sync_fastapi"),
)


def closed_loop_rows(report: dict[str, Any]) -> list[list[Cell]]:
    r = rates(report)
    mls = r["mlserver"]
    rows: list[list[Cell]] = []
    for name, path, key in HTTP_ROWS:
        if path[0] not in report:
            continue  # not chosen with --systems
        part = _part(report, *path)
        if part is None:
            rows.append([name, *([None] * 7)])
            continue
        load, seq = part["load"], part["sequential"]
        rows.append(
            [
                name,
                load["jobs_per_s"],
                load["p50_ms"],
                load["p99_ms"],
                seq["p50_ms"],
                seq["p99_ms"],
                load["errors"] + load["mismatches"] + seq["errors"] + seq["mismatches"],
                _over(r[key], mls),
            ]
        )
    naive = _part(report, "naive_celery")
    if "naive_celery" in report:
        rows.append(
            [
                "naive Celery, 1 task per job",
                r["naive_celery"],
                None,
                None,
                naive["seq_p50_ms"] if naive else None,
                naive["seq_p99_ms"] if naive else None,
                0 if naive else None,
                _over(r["naive_celery"], mls),
            ]
        )
    if "in_process" in report:
        rows.append(
            [
                "in-process predict, 1 row",
                r["in_process"],
                *([None] * 5),
                _over(r["in_process"], mls),
            ]
        )
    for ours, theirs in direct_pairs(report):
        for label, run in (("direct mlqueue.predict", ours), ("naive Celery, direct", theirs)):
            rows.append(
                [f"{label}, {run['senders']} sender(s)", run["jobs_per_s"], None, None, None,
                 None, run["mismatches"], _over(run["jobs_per_s"], mls)]
            )  # fmt: skip
    return rows


def direct_pairs(report: dict[str, Any]) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """(mlqueue, naive Celery) direct-enqueuer runs with the same sender count, in order."""
    ours, theirs = report.get("direct_mlqueue"), report.get("direct_naive")
    if not isinstance(ours, list) or not isinstance(theirs, list):
        return []
    return list(zip(ours, theirs, strict=True))


def direct_ratios(report: dict[str, Any]) -> dict[str, float | None]:
    """mlqueue.predict sent directly over naive Celery, per sender count (goal: >= 3x)."""
    return {
        f"direct_{ours['senders']}_senders_vs_naive_celery": _over(
            ours["jobs_per_s"], theirs["jobs_per_s"]
        )
        for ours, theirs in direct_pairs(report)
    }


OPEN_LOOP_SYSTEMS = (
    ("mlqueue /predict", ("mlqueue", "predict")),
    ("mlqueue submit + poll", ("mlqueue",)),
    ("MLServer", ("mlserver",)),
)


def open_loop_rows(report: dict[str, Any]) -> list[list[Cell]]:
    rows: list[list[Cell]] = []
    for name, path in OPEN_LOOP_SYSTEMS:
        part = _part(report, *path)
        for level in (part or {}).get("open_loop", []):
            rows.append(
                [
                    name,
                    f"{round(100 * level['share'])} %",
                    level["target_rate"],
                    level["achieved_rate"],
                    level["p50_ms"],
                    level["p99_ms"],
                    level["p999_ms"],
                    level["errors"] + level["mismatches"] + level["unfinished"],
                    level["send_lag_p99_ms"],
                ]
            )
    return rows


CLOSED_HEAD = ["", "jobs/s", "p50 ms", "p99 ms", "seq p50", "seq p99", "errors", "x MLServer"]
OPEN_HEAD = [
    "open loop",
    "of capacity",
    "target/s",
    "achieved/s",
    "p50 ms",
    "p99 ms",
    "p99.9 ms",
    "errors",
    "send lag p99",
]


def _cell(value: Cell) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.2f}" if abs(value) < 100 else f"{value:,.0f}"
    return f"{value:,}" if isinstance(value, int) else value


def text_table(head: list[str], rows: list[list[Cell]]) -> str:
    cells = [head, *([_cell(c) for c in row] for row in rows)]
    widths = [max(len(row[i]) for row in cells) for i in range(len(head))]
    lines = []
    for row in cells:
        padded = [c.rjust(w) for c, w in zip(row, widths, strict=True)]
        padded[0] = row[0].ljust(widths[0])
        lines.append("  ".join(padded))
    return "\n".join(lines)


def markdown_table(head: list[str], rows: list[list[Cell]]) -> str:
    lines = ["| " + " | ".join(head) + " |", "| --- |" + " ---: |" * (len(head) - 1)]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def notes(report: dict[str, Any]) -> list[str]:
    """Ratios, issue 16's targets, client CPU and errors, one line each."""
    found = []
    ratio = report.get("ratios") or ratios(report)
    measured = [f"{k} {v}x" for k, v in ratio.items() if v is not None]
    if measured:
        found.append("ratios (mlqueue jobs/s over each baseline): " + ", ".join(measured))
    rounds = report.get("ratios_per_round") or {}
    if any(len(v) > 1 for v in rounds.values()):
        found.append(
            "per round, in turns (the rows above are each system's median round): "
            + "; ".join(
                f"{k} {', '.join(f'{x}x' for x in v)} (median {statistics.median(v):.3g}x)"
                for k, v in rounds.items()
            )
        )
    checks = []
    goals = {**TARGETS, **dict.fromkeys(direct_ratios(report), DIRECT_TARGET)}
    for key, goal in goals.items():
        if ratio.get(key) is not None:
            met = "met" if ratio[key] >= goal else "not met"
            checks.append(f"{key} {ratio[key]}x (goal {goal}x: {met})")
    for name, path in (("/predict", ("mlqueue", "predict")), ("submit+poll", ("mlqueue",))):
        part = _part(report, *path)
        if part is not None:
            p99 = part["load"]["p99_ms"]
            met = "met" if p99 <= TARGET_P99_MS else "not met"
            checks.append(f"{name} p99 {p99} ms (goal {TARGET_P99_MS:g}: {met})")
    if checks:
        found.append("issue 16 goals: " + "; ".join(checks))
    inproc = _part(report, "in_process")
    if inproc:
        found.append(
            f"in-process: fast 1-row predict {inproc['fast_predict_1row_calls_per_s']} calls/s; "
            f"10k-row batches {inproc['predict_10k_rows_per_s']:,.0f} rows/s"
        )
    shares = [
        f"{name} {part['load']['client_cpu_share']:.2f}"
        for name, path, _ in HTTP_ROWS
        if (part := _part(report, *path)) is not None
    ]
    if shares:
        found.append("load generator CPU (cores): " + ", ".join(shares))
    for key in SYSTEM_KEYS:
        node = report.get(key)
        if isinstance(node, dict) and "error" in node:
            found.append(f"{key} FAILED: {node['error']}")
    return found


def render(report: dict[str, Any]) -> tuple[str, str]:
    """The report as terminal text and as Markdown."""
    args = report["args"]
    title = (
        f"1-row jobs, {args['clients']} keep-alive clients x {args['duration']:g} s, "
        f"{report['cpus']} CPUs, load average {report['load_avg_before'][0]:.2f} before, "
        f"{report.get('load_avg_after', [float('nan')])[0]:.2f} after ({report['when']})"
    )
    closed, opened = closed_loop_rows(report), open_loop_rows(report)
    text = [title, text_table(CLOSED_HEAD, closed)]
    md = [f"# `make bench` {report['when']}", "", title, "", markdown_table(CLOSED_HEAD, closed)]
    if opened:
        sub = (
            f"open loop: constant arrival rate at shares of each system's jobs/s above, "
            f"{args.get('ol_s', '?')} s per level; latency from the scheduled send time"
        )
        text += ["", sub, text_table(OPEN_HEAD, opened)]
        md += ["", sub, "", markdown_table(OPEN_HEAD, opened)]
    extra = notes(report)
    text += ["", *extra]
    md += ["", *(f"- {line}" for line in extra)]
    return "\n" + "\n".join(text), "\n".join(md) + "\n"


def failures(report: dict[str, Any]) -> int:
    """mlqueue's errors and wrong answers (wrong answers only, open loop), failed systems."""
    count = 0
    for key in SYSTEM_KEYS:
        node = report.get(key)
        if isinstance(node, dict) and "error" in node:
            count += 1
    count += sum(ours["mismatches"] for ours, _ in direct_pairs(report))
    for path in (("mlqueue",), ("mlqueue", "predict"), ("mlqueue", "v2")):
        part = _part(report, *path)
        if part is None:
            continue
        for run in (part["load"], part["sequential"]):
            count += run["errors"] + run["mismatches"]
        # Past capacity an open-loop run may see refusals (503 queue full) or answers later than
        # its drain; those are the measurement. A wrong answer never is.
        count += sum(run["mismatches"] for run in part.get("open_loop", []))
    return count


if __name__ == "__main__":
    for name in sys.argv[1:]:
        print(render(json.loads(Path(name).read_text()))[0])
