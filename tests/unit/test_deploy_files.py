"""The Dockerfiles, compose files and .env.example agree with the code they run.

The linters in `.ci/lint-deploy` check the files' syntax; these tests check their meaning: the
commands, module paths, ports, health endpoints and `MLQUEUE_*` names they use exist.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml
from celery import Celery

from devrun import processes
from gateway.app import create_app
from gateway.healthcheck import healthz_url
from shared.settings import Settings
from shared.tasks import WORKER_QUEUES

ROOT = Path(__file__).resolve().parents[2]
PREFIX = "MLQUEUE_"
# `${VAR}`, `${VAR:-default}`, `${VAR-default}`, `${VAR:?error}`: name, operator, default/error.
INTERPOLATION = re.compile(r"\$\{(\w+)(?::?([-?])([^}]*))?\}")


def dockerfile(name: str) -> dict[str, list[tuple[str, str]]]:
    """Instructions per build stage: {"stage": [("RUN", "args"), ...]}."""
    text = re.sub(r"\\\n", " ", (ROOT / name).read_text())
    stages: dict[str, list[tuple[str, str]]] = {}
    current: list[tuple[str, str]] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        instruction, _, args = line.partition(" ")
        if instruction.upper() == "FROM":
            current = stages.setdefault(args.split()[-1], [])
        current.append((instruction.upper(), args.strip()))
    return stages


def exec_form(args: str) -> list[str]:
    """The argv of `CMD [...]` or `HEALTHCHECK ... CMD [...]`."""
    argv = json.loads(args[args.index("[") :])
    assert isinstance(argv, list)
    return [str(a) for a in argv]


def instruction(stage: list[tuple[str, str]], name: str) -> list[str]:
    return [args for instr, args in stage if instr == name]


def compose(name: str = "docker-compose.yaml") -> dict[str, Any]:
    data = yaml.safe_load((ROOT / name).read_text())
    assert isinstance(data, dict)
    return data


def env_example() -> dict[str, str]:
    """The uncommented `NAME=value` lines of .env.example."""
    pairs = (
        line.split("=", 1)
        for line in (ROOT / ".env.example").read_text().splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    )
    return {name.strip(): value.strip() for name, value in pairs}


def compose_defaults() -> dict[str, str | None]:
    """Every variable the compose files interpolate, with its default ("" if none, None if the
    file requires it with `${VAR:?error}`)."""
    found: dict[str, str | None] = {}
    for name in ("docker-compose.yaml", "docker-compose.test.yaml"):
        for var, operator, default in INTERPOLATION.findall((ROOT / name).read_text()):
            found[var] = None if operator == "?" else default
    return found


def mlqueue_names_in_deploy_files() -> set[str]:
    names: set[str] = set()
    for name in (
        "docker-compose.yaml",
        "docker-compose.test.yaml",
        "docker-compose.ha.yaml",
        ".env.example",
    ):
        names |= set(re.findall(rf"\b{PREFIX}\w+", _uncommented(ROOT / name)))
    for name in ("Dockerfile.gateway", "Dockerfile.worker"):
        for stage in dockerfile(name).values():
            for args in instruction(stage, "ENV"):
                names |= set(re.findall(rf"\b({PREFIX}\w+)=", args))
    return names


def _uncommented(path: Path) -> str:
    return "\n".join(
        line.split(" #")[0]
        for line in path.read_text().splitlines()
        if not line.lstrip().startswith("#")
    )


def settings_field(variable: str) -> str:
    assert variable.startswith(PREFIX)
    return variable[len(PREFIX) :].lower()


# --- commands and module paths -----------------------------------------------------------------


def celery_app_of(argv: list[str]) -> Celery:
    """The Celery app that `celery -A <module> ...` loads (Celery looks for `app` in it)."""
    module = importlib.import_module(argv[argv.index("-A") + 1])
    app = module.app
    assert isinstance(app, Celery)
    return app


def test_worker_command_matches_the_local_worker_and_consumes_the_task_queue() -> None:
    worker = dockerfile("Dockerfile.worker")["worker"]
    (cmd,) = instruction(worker, "CMD")
    argv = exec_form(cmd)
    assert argv[:4] == ["celery", "-A", "worker.celery_app", "worker"]
    assert celery_app_of(argv).main == "mlqueue"
    assert argv[argv.index("-Q") + 1] == ",".join(WORKER_QUEUES)
    # The same flags as `make run` and the integration tests (prefork is Celery's default pool).
    local = processes.worker_argv()[3:]
    assert argv[1:] == [a for a in local if a not in ("--pool", "prefork")]
    # Concurrency is left to settings (MLQUEUE_WORKER_CONCURRENCY -> worker_concurrency).
    assert "--concurrency" not in argv and "-c" not in argv


def test_worker_healthcheck_pings_this_node_of_the_same_app() -> None:
    worker = dockerfile("Dockerfile.worker")["worker"]
    (check,) = instruction(worker, "HEALTHCHECK")
    shell = exec_form(check)
    assert shell[:2] == ["sh", "-c"]
    argv = shlex.split(shell[2])
    assert argv[:5] == ["celery", "-A", "worker.celery_app", "inspect", "ping"]
    assert argv[argv.index("--destination") + 1] == "celery@$HOSTNAME"
    celery_app_of(argv)


def test_gateway_command_and_healthcheck_modules_exist() -> None:
    gateway = dockerfile("Dockerfile.gateway")["gateway"]
    (cmd,) = instruction(gateway, "CMD")
    assert (
        exec_form(cmd) == ["python", *processes.gateway_argv()[1:]] == ["python", "-m", "gateway"]
    )
    assert importlib.util.find_spec("gateway.__main__") is not None
    (check,) = instruction(gateway, "HEALTHCHECK")
    argv = exec_form(check)
    assert argv[:2] == ["python", "-m"]
    assert importlib.util.find_spec(argv[2]) is not None


def test_flower_runs_the_same_celery_app() -> None:
    (cmd,) = instruction(dockerfile("Dockerfile.worker")["flower"], "CMD")
    argv = exec_form(cmd)
    assert argv[3] == "flower" and "--port=5555" in argv
    celery_app_of(argv)


def test_the_train_command_exists_and_knows_if_missing() -> None:
    models = compose()["services"]["models"]
    baked = instruction(dockerfile("Dockerfile.worker")["worker"], "RUN")
    for argv in (models["command"], shlex.split(baked[-1])):
        assert argv[:3] == ["python", "-m", "worker.train"] and "--if-missing" in argv
    train = importlib.import_module("worker.train")
    with pytest.raises(SystemExit) as exited:
        train.main(["--help"])
    assert exited.value.code == 0


def test_gateway_image_installs_no_worker_code_nor_ml_stack() -> None:
    text = (ROOT / "Dockerfile.gateway").read_text()
    assert "['optional-dependencies']['gateway']" in text
    assert "['optional-dependencies']['worker']" not in text
    copies = instruction(dockerfile("Dockerfile.gateway")["build"], "COPY")
    assert not [c for c in copies if "worker" in c]


def test_final_stages_run_as_the_same_non_root_user() -> None:
    for name, stage in (("Dockerfile.gateway", "gateway"), ("Dockerfile.worker", "worker")):
        users = instruction(dockerfile(name)[stage], "USER")
        assert users == ["10001:10001"], name
    # The worker image is the default build (last stage).
    assert list(dockerfile("Dockerfile.worker"))[-1] == "worker"


# --- ports and health endpoints ----------------------------------------------------------------


def test_gateway_port_and_health_endpoints_exist() -> None:
    port = Settings.model_fields["port"].default
    gateway = dockerfile("Dockerfile.gateway")["gateway"]
    assert instruction(gateway, "EXPOSE") == [str(port)]
    assert f"MLQUEUE_PORT={port}" in " ".join(instruction(gateway, "ENV"))
    published = compose()["services"]["gateway"]["ports"]
    assert [p.rsplit(":", 1)[1] for p in published] == [str(port)]
    paths = create_app(Settings()).openapi()["paths"]
    assert "get" in paths["/healthz"] and "get" in paths["/readyz"]
    probe = healthz_url(Settings(host="0.0.0.0", port=port))
    assert probe == f"http://127.0.0.1:{port}/healthz"


def test_flower_port() -> None:
    flower = compose()["services"]["flower"]
    assert [p.rsplit(":", 1)[1] for p in flower["ports"]] == ["5555"]
    assert instruction(dockerfile("Dockerfile.worker")["flower"], "EXPOSE") == ["5555"]


# --- services ----------------------------------------------------------------------------------


def test_worker_is_scalable_and_everything_waits_for_a_healthy_redis() -> None:
    services = compose()["services"]
    worker = services["worker"]
    assert "container_name" not in worker and "ports" not in worker
    for name in ("gateway", "worker", "flower"):
        assert services[name]["depends_on"]["redis"] == {"condition": "service_healthy"}
    for name in ("gateway", "worker"):
        assert services[name]["depends_on"]["models"] == {
            "condition": "service_completed_successfully"
        }
    # Gateways only read the registry; workers install uploaded versions into it.
    assert "models:/app/models:ro" in services["gateway"]["volumes"]
    assert "models:/app/models" in services["worker"]["volumes"]
    assert services["flower"]["profiles"] == ["flower"]


def test_redis_is_pinned_persistent_and_healthchecked() -> None:
    redis = compose()["services"]["redis"]
    # The official image by default; REDIS_IMAGE selects a stand-in (make images-offline).
    image = INTERPOLATION.fullmatch(redis["image"])
    assert image is not None and image.group(1) == "REDIS_IMAGE"
    assert re.fullmatch(r"redis:\d+(\.\d+)*-alpine", image.group(3))
    assert redis["command"][redis["command"].index("--appendonly") + 1] == "yes"
    assert "redis-data:/data" in redis["volumes"]
    assert "redis-data" in compose()["volumes"]
    assert "redis-cli ping" in redis["healthcheck"]["test"][1]


def test_the_ha_compose_runs_two_data_nodes_and_three_sentinels_with_quorum_two() -> None:
    services = compose("docker-compose.ha.yaml")["services"]
    for node in ("redis", "redis-replica"):
        script = services[node]["command"][-1]
        for option in ("--appendonly yes", "--min-replicas-to-write 1", "--min-replicas-max-lag"):
            assert option in script, (node, option)
        # A restarted node asks the sentinels for the master before it serves anything.
        assert 'sentinel "$$1" mymaster' in script and "ask get-master-addr-by-name" in script
        # Its fixed address is what it announces (the sentinels know nodes by address).
        address = services[node]["networks"]["default"]["ipv4_address"]
        assert services[node]["environment"]["NODE"] == address
        assert '--replica-announce-ip "$$NODE"' in script
    first_master = services["redis"]["networks"]["default"]["ipv4_address"]
    sentinels = [name for name in services if name.startswith("sentinel-")]
    assert len(sentinels) == 3
    for name in sentinels:
        assert services[name]["environment"]["FIRST_MASTER"] == first_master
        assert "sentinel monitor mymaster $$FIRST_MASTER 6379 2" in services[name]["command"][-1]
    for name in ("gateway", "worker"):
        settings = Settings(
            redis_sentinels=services[name]["environment"]["MLQUEUE_REDIS_SENTINELS"],
            redis_master_name=services[name]["environment"]["MLQUEUE_REDIS_MASTER_NAME"],
        )
        assert [s.split(":")[0] for s in settings.redis_sentinels] == sentinels
        assert settings.redis_master_name == "mymaster"
        assert set(services[name]["depends_on"]) == set(sentinels)


def test_the_test_compose_runs_make_test_against_its_redis() -> None:
    services = compose("docker-compose.test.yaml")["services"]
    tests = services["tests"]
    assert tests["build"]["target"] in dockerfile("Dockerfile.worker")
    assert tests["command"] == ["make", "test"]
    assert tests["environment"]["MLQUEUE_TEST_REDIS_URL"] == "redis://redis:6379/0"
    assert tests["depends_on"]["redis"] == {"condition": "service_healthy"}


# --- environment variables ---------------------------------------------------------------------


def test_every_mlqueue_variable_is_a_setting() -> None:
    names = mlqueue_names_in_deploy_files() - {"MLQUEUE_TEST_REDIS_URL"}  # read by the tests only
    assert len(names) > 15
    unknown = sorted(n for n in names if settings_field(n) not in Settings.model_fields)
    assert unknown == []


def test_every_compose_variable_is_documented_with_the_same_default() -> None:
    documented = env_example()
    text = (ROOT / ".env.example").read_text()
    for var, default in compose_defaults().items():
        assert re.search(rf"^#? ?{var}=", text, re.MULTILINE), f"{var} not in .env.example"
        if var in documented and default is not None:
            assert documented[var] == default, var


def test_the_defaults_are_valid_settings() -> None:
    values = {
        settings_field(var): default
        for var, default in {**compose_defaults(), **env_example()}.items()
        if var.startswith(PREFIX) and var != "MLQUEUE_TEST_REDIS_URL" and default is not None
    }
    settings = Settings(**values)  # raises on a default of the wrong type
    assert settings.worker_concurrency == int(values["worker_concurrency"])
