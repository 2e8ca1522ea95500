"""The registry trusts a manifest for metadata only: where the artifact is, and which model it
is, come from the folders; the bytes that were hashed are the bytes that are loaded."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from sklearn.dummy import DummyRegressor

from shared import registry as registry_module
from shared.errors import ModelError, ModelNotFound
from shared.registry import Registry
from worker.model_cache import ModelCache
from worker.sklearn_model import SklearnModel


@pytest.fixture
def root(model_dir: Path, tmp_path: Path) -> Path:
    root = tmp_path / "registry"
    shutil.copytree(model_dir, root)
    return root


def edit_manifest(folder: Path, **changes: Any) -> None:
    path = folder / "manifest.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))


def other_model(path: Path) -> str:
    """Dump a model that predicts 42 everywhere at `path`; its sha256."""
    SklearnModel(DummyRegressor(strategy="constant", constant=42.0)).train(
        np.zeros((2, 10)), np.zeros(2)
    ).save(path)
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("artifact", ["absolute", "../../elsewhere/model.joblib", ".model"])
def test_an_artifact_outside_its_version_folder_is_refused(
    root: Path, tmp_path: Path, artifact: str
) -> None:
    outside = tmp_path / "elsewhere" / "model.joblib"
    outside.parent.mkdir()
    sha = other_model(outside)
    (root / "demo" / "1" / ".model").write_bytes(outside.read_bytes())
    name = str(outside) if artifact == "absolute" else artifact
    edit_manifest(root / "demo" / "1", artifact=name, sha256=sha)
    cache = ModelCache(Registry(root, "demo"), loader=lambda _: pytest.fail("must not load"))
    with pytest.raises(ModelError, match="artifact must be a file name in the version's folder"):
        cache.get("demo")


def test_a_manifest_naming_another_model_or_version_is_refused(root: Path) -> None:
    shutil.copytree(root / "demo" / "1", root / "copy" / "1")
    shutil.copytree(root / "demo" / "1", root / "demo" / "2")
    edit_manifest(root / "demo" / "2", version="1")
    registry = Registry(root, "demo")
    with pytest.raises(ModelError, match="its manifest says 'demo' version '1'"):
        registry.resolve("copy")
    with pytest.raises(ModelError, match="its manifest says 'demo' version '1'"):
        registry.resolve("demo:2")
    # The listing leaves refused versions out rather than failing for every model.
    assert [(m.name, m.version) for m in registry.all_versions()] == [("demo", "1")]


@pytest.mark.parametrize("name", ["..", ".", ".hidden", "..:1"])
def test_names_starting_with_a_dot_are_refused(root: Path, name: str) -> None:
    shutil.copytree(root / "demo", root / ".hidden")
    with pytest.raises(ModelNotFound, match="invalid model name"):
        Registry(root, "demo").resolve(name)
    assert Registry(root, "demo").names() == ["demo"]


@pytest.mark.parametrize("name", ["..", ".hidden", "..:1", "./demo"])
def test_the_request_pattern_refuses_names_starting_with_a_dot(
    client: TestClient, name: str
) -> None:
    response = client.post("/v1/jobs", json={"data": [[0.0] * 10], "model": name})
    assert response.status_code == 422, response.text
    assert response.json()["detail"].startswith("model: String should match pattern")


def test_the_bytes_hashed_are_the_bytes_loaded(
    root: Path,
    model_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    diabetes_rows: list[list[float]],
) -> None:
    artifact = root / "demo" / "1" / "model.skops"
    other_model(tmp_path / "swap.joblib")
    swap = (tmp_path / "swap.joblib").read_bytes()
    real_sha256 = hashlib.sha256

    class SwapAfterHashing:
        """hashlib.sha256 whose digest, once taken, replaces the file on disk: a race won."""

        def __init__(self, data: bytes = b"") -> None:
            self.inner = real_sha256(data)

        def update(self, data: bytes) -> None:
            self.inner.update(data)

        def hexdigest(self) -> str:
            digest = self.inner.hexdigest()
            artifact.write_bytes(swap)
            return digest

    monkeypatch.setattr(registry_module.hashlib, "sha256", SwapAfterHashing)
    _, model = ModelCache(Registry(root, "demo")).get("demo")
    monkeypatch.undo()
    X = np.asarray(diabetes_rows[:20])
    genuine = SklearnModel.load(model_dir / "demo" / "1" / "model.skops")
    assert artifact.read_bytes() == swap  # the file was swapped after hashing...
    # ...and the verified model was loaded anyway, not the swapped one.
    assert model.predict(X).tolist() == genuine.predict(X).tolist()
