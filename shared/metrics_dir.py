"""prometheus-client's multiprocess mode, for a parent that forks processes which all count.

Each process writes its samples to files in one directory; whoever serves `/metrics` adds them up
with a `MultiProcessCollector`. `enable` must run before the processes create their metrics.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from prometheus_client import values


def enable(path: Path | None, prefix: str) -> Path:
    """Use `path` (emptied first) or a fresh temporary directory; returns the directory."""
    if path is None:
        path = Path(tempfile.mkdtemp(prefix=prefix))
    else:
        # Files of a previous run would be added to this run's counts.
        shutil.rmtree(path, ignore_errors=True)
        path.mkdir(parents=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(path)
    # The client picks its value class at import; pick again now that the directory is set.
    values.ValueClass = values.MultiProcessValue(process_identifier=_pid)
    return path


# Every update of a multiprocess value asks for the pid, to notice a fork: `os.getpid` is a
# system call each time (2 % of the gateway's CPU at 64 clients, py-spy). The pid is kept here
# instead, renewed in every child a fork makes (Celery's prefork pool and the gateway's
# processes fork with os.fork, which runs the hook).
_pids = [os.getpid()]
os.register_at_fork(after_in_child=lambda: _pids.__setitem__(0, os.getpid()))


def _pid() -> int:
    return _pids[0]


def enabled() -> bool:
    """Whether metrics created now are written to a multiprocess directory."""
    return values.ValueClass is not values.MutexValue
