"""The `score` command's progress bars on stderr (rich): upload, scoring, download."""

from __future__ import annotations

from typing import Any

from rich.console import Console, RenderableType
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    ProgressColumn,
    Task,
    TaskID,
    TaskProgressColumn,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.text import Text

from client._shared import Step


class Bars:
    """One bar per stage, created when the stage reports first; silent with `quiet`."""

    def __init__(self, quiet: bool = False) -> None:
        self.progress = Progress(
            TextColumn("{task.description:>9}"),
            BarColumn(),
            TaskProgressColumn(),
            _Amount(DownloadColumn()),
            _Amount(TransferSpeedColumn()),
            TimeRemainingColumn(),
            console=Console(stderr=True, quiet=quiet),
        )
        self.tasks: dict[str, TaskID] = {}

    def __enter__(self) -> Bars:
        self.progress.start()
        return self

    def __exit__(self, *_: Any) -> None:
        self.progress.stop()

    def step(self, step: Step) -> None:
        """Show a progress report of `Client.score_csv`."""
        if step.stage not in self.tasks:
            unit = "rows" if step.stage == "scoring" else "bytes"
            self.tasks[step.stage] = self.progress.add_task(step.stage, total=step.total, unit=unit)
        self.progress.update(self.tasks[step.stage], completed=step.done, total=step.total)


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
