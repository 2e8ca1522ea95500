"""What each production image holds, read from its Dockerfile and pyproject.toml.

The gateway image runs `shared` + `gateway`, the worker image `shared` + `worker`. Neither carries
`make run`'s supervisor (`devrun`), the CLI (`client`), the tests or the benchmarks: they are for a
developer's checkout. The images' own build steps also check this at `docker build` time.
"""

from __future__ import annotations

import fnmatch
import re
import tomllib
from pathlib import Path
from typing import Any

import pytest

from tests.unit.test_deploy_files import dockerfile, instruction

ROOT = Path(__file__).resolve().parents[2]
IMAGES = {  # Dockerfile -> (the stage that installs the code, the stage that ships)
    "Dockerfile.gateway": ("build", "gateway"),
    "Dockerfile.worker": ("build", "worker"),
}
EXPECTED = {"Dockerfile.gateway": {"shared", "gateway"}, "Dockerfile.worker": {"shared", "worker"}}
NEVER_SHIPPED = {"devrun", "client", "tests", "bench"}
ML_STACK = {"scikit-learn", "numpy", "scipy", "pandas", "joblib", "threadpoolctl"}


def pyproject() -> dict[str, Any]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def project_packages() -> set[str]:
    """The top-level Python packages of the checkout."""
    return {p.parent.name for p in ROOT.glob("*/__init__.py")}


def copied_folders(name: str, stage: str) -> set[str]:
    """The top-level folders that `stage` copies from the build context (not `--from` a stage)."""
    found: set[str] = set()
    for args in instruction(dockerfile(name)[stage], "COPY"):
        words = args.split()
        if any(w.startswith("--from") for w in words):
            continue
        sources = [w for w in words if not w.startswith("--")][:-1]
        found |= {s.strip("./").split("/")[0] for s in sources}
    return found


def found_by_pip(folders: set[str]) -> set[str]:
    """The packages that `pip install .` finds among `folders`: setuptools' `packages.find`
    includes a folder with an `__init__.py` when its name matches an `include` pattern."""
    include = pyproject()["tool"]["setuptools"]["packages"]["find"]["include"]
    return {
        f
        for f in folders & project_packages()
        if any(fnmatch.fnmatchcase(f, pattern) for pattern in include)
    }


def requirements(name: str) -> set[str]:
    """The distribution names the build stage installs: `dependencies` plus the extras it names."""
    project = pyproject()["project"]
    extras = re.findall(r"\['optional-dependencies'\]\['([\w-]+)'\]", (ROOT / name).read_text())
    specs = project["dependencies"] + [
        s for e in extras for s in project["optional-dependencies"][e]
    ]
    return {re.split(r"[\[<>=!~; ]", spec, maxsplit=1)[0].lower() for spec in specs}


@pytest.mark.parametrize("name", sorted(IMAGES))
def test_each_image_installs_exactly_its_packages(name: str) -> None:
    build, _ = IMAGES[name]
    assert found_by_pip(copied_folders(name, build)) == EXPECTED[name]
    assert not copied_folders(name, build) & NEVER_SHIPPED


@pytest.mark.parametrize("name", sorted(IMAGES))
def test_the_shipped_stage_takes_only_the_built_venv(name: str) -> None:
    _, final = IMAGES[name]
    assert copied_folders(name, final) == set()
    assert instruction(dockerfile(name)[final], "COPY") == ["--from=build /opt/venv /opt/venv"]


def test_a_checkout_installs_every_package_but_the_tests_and_benchmarks() -> None:
    assert found_by_pip(project_packages()) == project_packages() - {"tests", "bench"}
    assert {"shared", "gateway", "worker", "devrun", "client"} <= project_packages()


@pytest.mark.parametrize("name", sorted(IMAGES))
def test_no_image_keeps_a_command_whose_package_it_lacks(name: str) -> None:
    build, _ = IMAGES[name]
    runs = " ".join(instruction(dockerfile(name)[build], "RUN"))
    for script, target in pyproject()["project"]["scripts"].items():
        if target.split(".")[0] not in EXPECTED[name]:
            assert f"rm /opt/venv/bin/{script}" in runs


def test_the_gateway_image_installs_no_ml_stack_and_the_worker_no_web_server() -> None:
    assert requirements("Dockerfile.gateway") >= {"fastapi", "celery", "redis"}
    assert not requirements("Dockerfile.gateway") & ML_STACK
    assert requirements("Dockerfile.worker") >= {"scikit-learn", "numpy", "celery"}
    assert not requirements("Dockerfile.worker") & {"fastapi", "uvicorn", "python-multipart"}
    # The CLI's extra belongs to neither image.
    assert not (requirements("Dockerfile.gateway") | requirements("Dockerfile.worker")) & {
        "click",
        "rich",
    }
