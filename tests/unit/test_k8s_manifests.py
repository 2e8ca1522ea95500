"""deploy/k8s agrees with the code it runs.

`.ci/lint-deploy` validates the built-in kinds against a pinned Kubernetes version's schemas;
these tests check what no schema can: the ScaledObject (a KEDA custom resource) watches the queue
the workers consume, the probes name real endpoints, every setting is a real one, and the
worker's grace period covers a job's hard time limit.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from gateway.app import create_app
from shared.settings import Settings
from shared.tasks import QUEUES

K8S = Path(__file__).resolve().parents[2] / "deploy" / "k8s"


def documents() -> dict[tuple[str, str], dict[str, Any]]:
    """Every resource in the kustomization, by (kind, name)."""
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    found: dict[tuple[str, str], dict[str, Any]] = {}
    for name in kustomization["resources"]:
        for doc in yaml.safe_load_all((K8S / name).read_text()):
            found[(doc["kind"], doc["metadata"]["name"])] = doc
    return found


def container(deployment: dict[str, Any], name: str) -> dict[str, Any]:
    containers = deployment["spec"]["template"]["spec"]["containers"]
    return next(c for c in containers if c["name"] == name)


def test_every_manifest_file_is_in_the_kustomization() -> None:
    listed = set(yaml.safe_load((K8S / "kustomization.yaml").read_text())["resources"])
    assert listed == {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}


def test_keda_scales_the_worker_deployment_on_the_queue_it_consumes() -> None:
    docs = documents()
    scaled = docs[("ScaledObject", "worker")]["spec"]
    assert ("Deployment", scaled["scaleTargetRef"]["name"]) in docs
    triggers = scaled["triggers"]
    assert [t["metadata"]["listName"] for t in triggers] == list(QUEUES)  # one per priority
    for trigger in triggers:
        assert trigger["type"] == "redis"
        assert trigger["metadata"]["address"].split(".")[0] == "redis"
    assert ("Service", "redis") in docs
    assert 1 <= scaled["minReplicaCount"] <= scaled["maxReplicaCount"]


def test_gateway_probes_name_its_health_endpoints() -> None:
    gateway = container(documents()[("Deployment", "gateway")], "gateway")
    paths = create_app(Settings()).openapi()["paths"]
    assert gateway["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert gateway["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert "get" in paths["/healthz"] and "get" in paths["/readyz"]
    port = gateway["ports"][0]
    assert port["containerPort"] == Settings().port == 8000


def test_settings_are_real_and_valid() -> None:
    docs = documents()
    data = docs[("ConfigMap", "mlqueue-settings")]["data"]
    env = {
        e["name"]: e["value"]
        for kind, name in (("Deployment", "gateway"), ("Deployment", "worker"))
        for e in container(docs[(kind, name)], name).get("env", [])
    }
    values = {k.removeprefix("MLQUEUE_").lower(): v for k, v in {**data, **env}.items()}
    assert set(values) <= set(Settings.model_fields)
    Settings(**values)  # raises on an invalid value or combination


def test_worker_shuts_down_warm_within_its_grace_period() -> None:
    docs = documents()
    worker = docs[("Deployment", "worker")]["spec"]["template"]["spec"]
    settings = docs[("ConfigMap", "mlqueue-settings")]["data"]
    assert worker["terminationGracePeriodSeconds"] > int(settings["MLQUEUE_TASK_TIME_LIMIT"]) + 2
    resources = container(docs[("Deployment", "worker")], "worker")["resources"]
    assert resources["requests"]["cpu"] and resources["limits"]["memory"]
    budget = docs[("PodDisruptionBudget", "worker")]["spec"]["selector"]["matchLabels"]
    assert budget == docs[("Deployment", "worker")]["spec"]["selector"]["matchLabels"]
