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
    values.ValueClass = values.get_value_class()
    return path


def enabled() -> bool:
    """Whether metrics created now are written to a multiprocess directory."""
    return values.ValueClass is not values.MutexValue
