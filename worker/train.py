"""Train the demo model and add it to the registry as a new version.

    python -m worker.train [--name demo] [--if-missing]

A RandomForestRegressor (random_state fixed) on scikit-learn's bundled diabetes data (442 x 10),
with a 20 % holdout for the manifest's R² and MAE.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from datetime import UTC, datetime
from pathlib import Path

import sklearn
from sklearn.datasets import load_diabetes
from sklearn.metrics import mean_absolute_error, r2_score
from sklearn.model_selection import train_test_split

from shared.registry import MANIFEST, Registry, sha256_file
from shared.schemas import ModelInfo
from shared.settings import get_settings
from worker.sklearn_model import SklearnModel

ARTIFACT = "model.skops"


def train_demo(registry: Registry, name: str) -> ModelInfo:
    """Fit the demo model, write artifact and manifest atomically, return the manifest."""
    data = load_diabetes()
    X_train, X_test, y_train, y_test = train_test_split(
        data.data, data.target, test_size=0.2, random_state=0
    )
    model = SklearnModel().train(X_train, y_train)
    predicted = model.predict(X_test)
    version = registry.next_version(name)
    (registry.root / name).mkdir(parents=True, exist_ok=True)
    # Build in a scratch folder and rename: a half-written version is never visible.
    scratch = Path(tempfile.mkdtemp(dir=registry.root / name, prefix=".tmp-"))
    scratch.chmod(0o755)  # mkdtemp makes it private; other users (containers) read it
    # skops, not pickle: loading it rebuilds only trusted types (worker.skops_format).
    model.save(scratch / ARTIFACT)
    info = ModelInfo(
        name=name,
        version=version,
        created_at=datetime.now(UTC),
        feature_names=list(data.feature_names),
        n_features=model.n_features,
        framework_version=sklearn.__version__,
        estimator=type(model.estimator).__name__,
        metrics={
            "r2": round(float(r2_score(y_test, predicted)), 4),
            "mae": round(float(mean_absolute_error(y_test, predicted)), 4),
        },
        sha256=sha256_file(scratch / ARTIFACT),
        artifact=ARTIFACT,
    )
    (scratch / MANIFEST).write_text(json.dumps(info.model_dump(mode="json"), indent=2) + "\n")
    os.rename(scratch, registry.root / name / version)
    return info


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point."""
    settings = get_settings()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--name", default=settings.default_model, help="model name")
    parser.add_argument("--if-missing", action="store_true", help="do nothing if a version exists")
    args = parser.parse_args(argv)
    registry = Registry(settings.model_dir, settings.default_model)
    if args.if_missing and args.name in registry.names():
        print(f"model {args.name} exists in {settings.model_dir}; not training")
        return
    info = train_demo(registry, args.name)
    print(f"trained {info.name}:{info.version} r2={info.metrics['r2']} mae={info.metrics['mae']}")


if __name__ == "__main__":
    main()
