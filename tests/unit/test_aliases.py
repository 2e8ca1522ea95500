"""Aliases on the unit level: targets, resolution through the registry, and the admin routes
(fakeredis, the gateway's service layer and the worker body run by the fake publisher)."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import fakeredis
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from pydantic import ValidationError

from gateway.app import create_app
from gateway.state import GatewayState
from shared.aliases import AliasTarget, SyncAliasBook, set_alias
from shared.errors import ModelNotFound, QueueUnavailable
from shared.registry import MANIFEST, Registry
from shared.settings import Settings
from tests.unit.conftest import FakePublisher


@pytest.fixture(scope="module")
def model_dir(model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo model as versions 1, 2 and 3 (same estimator, own manifests)."""
    root = tmp_path_factory.mktemp("alias-models")
    for version in ("1", "2", "3"):
        folder = root / "demo" / version
        shutil.copytree(model_dir / "demo" / "1", folder)
        manifest = json.loads((folder / MANIFEST).read_text())
        manifest["version"] = version
        (folder / MANIFEST).write_text(json.dumps(manifest))
    return root


def test_a_target_is_one_version_or_weighted_versions() -> None:
    assert AliasTarget(version=3).primaries() == [3]
    assert AliasTarget(versions={"4": 0.1, "3": 0.9}).primaries() == [3, 4]
    for bad in (
        {},
        {"version": 3, "versions": {"3": 1}},
        {"versions": {}},
        {"versions": {"x": 1}},
        {"versions": {"3": 0}},
        {"version": 3, "shadow": 3},
        {"version": 0},
        {"version": 3, "extra": 1},
    ):
        with pytest.raises(ValidationError):
            AliasTarget.model_validate(bad)


def test_a_canary_picks_by_job_id_stably_and_in_proportion() -> None:
    target = AliasTarget(versions={"3": 0.9, "4": 0.1})
    picks = [target.choose(f"job-{i}") for i in range(10_000)]
    assert picks == [target.choose(f"job-{i}") for i in range(10_000)]  # fixed per id
    share = picks.count(4) / len(picks)
    assert 0.08 < share < 0.12, share  # 10 % +- 2 %: about 6 standard deviations
    assert set(picks) == {3, 4}


class Book:
    """A fixed set of aliases (the `AliasLookup` protocol)."""

    def __init__(self, targets: dict[tuple[str, str], AliasTarget]) -> None:
        self.targets = targets

    def lookup(self, name: str, alias: str) -> AliasTarget | None:
        return self.targets.get((name, alias))

    def of(self, name: str) -> dict[str, AliasTarget]:
        return {a: t for (n, a), t in self.targets.items() if n == name}


def test_the_registry_resolves_aliases_and_default_through_production(model_dir: Path) -> None:
    book = Book({})
    registry = Registry(model_dir, "demo", aliases=book)
    assert registry.resolve("default").version == "3"  # no production alias: newest
    book.targets[("demo", "production")] = AliasTarget(version=2)
    book.targets[("demo", "staging")] = AliasTarget(version=1, shadow=3)
    assert registry.resolve("default").version == "2"
    assert registry.resolve("demo@production").version == "2"
    assert registry.resolve("demo").version == "3"  # a bare name stays the newest version
    pinned = registry.pin("demo@staging", "job-1")
    assert (pinned.spec, pinned.shadow and pinned.shadow.version) == ("demo:1", "3")
    with pytest.raises(ModelNotFound, match=r"has no alias 'prod' .*production, staging"):
        registry.resolve("demo@prod")
    with pytest.raises(ModelNotFound, match="invalid alias"):
        registry.resolve("demo@Prod")
    book.targets[("demo", "gone")] = AliasTarget(version=9)
    with pytest.raises(ModelNotFound, match="points at version 9"):
        registry.resolve("demo@gone")


def test_the_worker_follows_alias_changes_in_redis(model_dir: Path) -> None:
    redis = fakeredis.FakeRedis()
    book = SyncAliasBook(redis)
    registry = Registry(model_dir, "demo", aliases=book)
    script = redis.register_script(__import__("shared.aliases").aliases.SET_ALIAS)
    call = set_alias("demo", "production", AliasTarget(version=1), "admin", "now")
    script(keys=call.keys, args=call.args)
    assert registry.resolve("default").version == "1"
    call = set_alias("demo", "production", AliasTarget(version=2), "admin", "now")
    script(keys=call.keys, args=call.args)
    book.checked = float("-inf")  # as if POLL_SECONDS had passed
    assert registry.resolve("demo@production").version == "2"
    assert len(redis.lrange("mlqueue:aliases:history:demo", 0, -1)) == 2


def test_a_gateway_copy_never_loaded_refuses_rather_than_guess(model_dir: Path) -> None:
    from shared.aliases import AliasBook

    registry = Registry(model_dir, "demo", aliases=AliasBook())
    with pytest.raises(QueueUnavailable, match="not loaded"):
        registry.resolve("default")
    assert registry.resolve("demo:2").version == "2"  # a pinned version needs no alias


def test_promote_submit_pin_and_history_through_the_api(client: TestClient) -> None:
    put = client.put("/v1/models/demo/aliases/production", json={"version": 2})
    assert put.status_code == 200, put.text
    assert put.json() == {"name": "demo", "aliases": {"production": {"version": 2}}}
    for model in ("default", "demo@production"):
        job = client.post("/v1/jobs", json={"data": [[0.0] * 10], "model": model}).json()
        assert client.get(f"/v1/jobs/{job['job_id']}").json()["version"] == "2"
    client.put("/v1/models/demo/aliases/production", json={"version": 3})
    job = client.post("/v1/jobs", json={"data": [[0.0] * 10]}).json()
    assert client.get(f"/v1/jobs/{job['job_id']}").json()["version"] == "3"
    changes = client.get("/v1/models/demo/history").json()["changes"]
    assert [(c["alias"], c["from"], c["to"], c["who"]) for c in changes] == [
        ("production", {"version": 2}, {"version": 3}, ""),
        ("production", None, {"version": 2}, ""),
    ]
    assert client.delete("/v1/models/demo/aliases/production").status_code == 200
    assert client.get("/v1/models/demo/aliases").json()["aliases"] == {}
    assert client.get("/v1/models/demo/history").json()["changes"][0]["to"] is None


def test_alias_mistakes_are_4xx_naming_them(client: TestClient) -> None:
    missing = client.post("/v1/jobs", json={"data": [[0.0] * 10], "model": "demo@nope"})
    assert missing.status_code == 422 and "no alias 'nope'" in missing.json()["detail"]
    bad = client.put("/v1/models/demo/aliases/production", json={"version": 7})
    assert bad.status_code == 422 and "demo:7" in bad.json()["detail"]
    bad = client.put("/v1/models/demo/aliases/production", json={"versions": {"2": -1}})
    assert bad.status_code == 422 and "weight" in bad.json()["detail"]
    bad = client.put("/v1/models/demo/aliases/Prod", json={"version": 1})
    assert bad.status_code == 422 and "alias" in bad.json()["detail"]
    gone = client.delete("/v1/models/demo/aliases/nope")
    assert gone.status_code == 404 and "nope" in gone.json()["detail"]
    unknown = client.get("/v1/models/ghost/history")
    assert unknown.status_code == 404 and "ghost" in unknown.json()["detail"]


def test_a_canary_records_the_version_each_job_got(client: TestClient) -> None:
    split = {"versions": {"1": 0.5, "2": 0.5}}
    assert client.put("/v1/models/demo/aliases/canary", json=split).status_code == 200
    target = AliasTarget.model_validate(split)
    got = set()
    for _ in range(20):
        job = client.post("/v1/jobs", json={"data": [[1.0] * 10], "model": "demo@canary"}).json()
        view = client.get(f"/v1/jobs/{job['job_id']}").json()
        assert view["version"] == str(target.choose(job["job_id"]))
        got.add(view["version"])
    assert got == {"1", "2"}  # 2 ** -19 that 20 fair picks all agree


KEYS = {"admin": "mlq_admin_key_0123456789", "user": "mlq_user_key_0123456789"}


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


@pytest.mark.parametrize("admin_keys", [True, False])
def test_alias_changes_need_an_admin_key_when_keys_are_on(
    settings: Settings,
    server: fakeredis.FakeServer,
    publisher: FakePublisher,
    admin_keys: bool,
) -> None:
    keyed = settings.model_copy(
        update={
            "api_keys": [_digest(KEYS["user"])],
            "admin_keys": [_digest(KEYS["admin"])] if admin_keys else [],
        }
    )
    state = GatewayState.create(
        keyed, redis=fakeredis.FakeAsyncRedis(server=server), publisher=publisher
    )
    app = create_app(keyed)
    app.state.gateway = state
    client = TestClient(app)
    path, body = "/v1/models/demo/aliases/staging", {"version": 1}
    assert client.put(path, json=body).status_code == 401
    user = {"Authorization": f"Bearer {KEYS['user']}"}
    refused = client.put(path, json=body, headers=user)
    assert refused.status_code == 403 and "admin key" in refused.json()["detail"]
    assert client.get("/v1/models/demo/history", headers=user).status_code == 200
    if not admin_keys:
        assert "MLQUEUE_ADMIN_KEYS" in refused.json()["detail"]
        return
    admin = {"Authorization": f"Bearer {KEYS['admin']}"}
    assert client.put(path, json=body, headers=admin).status_code == 200
    change = client.get("/v1/models/demo/history", headers=user).json()["changes"][0]
    assert change["who"] == _digest(KEYS["admin"])[:16]  # the key's id, never the key
    assert KEYS["admin"] not in json.dumps(change)


def test_the_sdk_alias_models_have_the_gateways_field_names(client: TestClient) -> None:
    from client import AliasChange, Aliases, History
    from client import AliasTarget as SdkTarget

    components = client.get("/openapi.json").json()["components"]["schemas"]
    pairs = {SdkTarget: "AliasTarget", Aliases: "AliasesView", History: "HistoryView"}
    pairs[AliasChange] = "AliasChange"
    for model, name in pairs.items():
        sdk_fields = {f.alias or n for n, f in model.model_fields.items()}
        schema = components.get(name) or components[f"{name}-Input"]  # the PUT body
        assert set(schema["properties"]) == sdk_fields, name


@pytest.mark.anyio
async def test_the_async_sdk_promotes_and_rolls_back(app: FastAPI, state: GatewayState) -> None:
    import httpx

    from client import AsyncClient

    transport = httpx.ASGITransport(app=app)
    async with AsyncClient("http://gw", transport=transport) as sdk:
        await sdk.promote("demo", 1, alias="blue")
        with pytest.raises(ValueError, match="no earlier target"):
            await sdk.rollback("demo", alias="blue")
        await sdk.promote("demo", 2, alias="blue")
        back = await sdk.rollback("demo", alias="blue")
        assert back.aliases["blue"].version == 1
        assert [c.to and c.to.version for c in (await sdk.history("demo")).changes] == [1, 2, 1]
        assert (await sdk.delete_alias("demo", "blue")).aliases == {}
