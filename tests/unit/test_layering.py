"""The import layering, read from the source with `ast` (every import, also under TYPE_CHECKING).

`shared` is the ground floor; `gateway` and `worker` stand on it and never on each other; `devrun`
(make run's supervisor) starts them from above, by command line; `client` speaks HTTP only. No
package imports the tests or the benchmarks.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
NOT_PRODUCTION = {"tests", "bench"}
FORBIDDEN = {
    "shared": {"gateway", "worker", "devrun", "client"},
    "gateway": {"worker", "devrun", "client"},
    "worker": {"gateway", "devrun", "client"},
    "devrun": {"client"},
    "client": {"shared", "gateway", "worker", "devrun"},
}


def imported_packages(package: str) -> dict[str, set[str]]:
    """For each module of `package`, the top-level packages it imports (absolute imports)."""
    found: dict[str, set[str]] = {}
    for path in sorted((ROOT / package).rglob("*.py")):
        names: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                names |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
        found[str(path.relative_to(ROOT))] = names
    return found


def test_no_package_imports_a_floor_above_or_beside_it() -> None:
    wrong = {
        module: sorted(names & (forbidden | NOT_PRODUCTION))
        for package, forbidden in FORBIDDEN.items()
        for module, names in imported_packages(package).items()
        if names & (forbidden | NOT_PRODUCTION)
    }
    assert wrong == {}


def test_the_reader_sees_the_imports_that_are_there() -> None:
    # Guards the test above against passing on an empty scan.
    imports = {p: set().union(*imported_packages(p).values()) for p in FORBIDDEN}
    assert {"shared"} <= imports["gateway"] & imports["worker"] & imports["devrun"]
    assert {"httpx", "click"} <= imports["client"]
    assert "gateway/app.py" in imported_packages("gateway")
