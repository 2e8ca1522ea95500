"""Seldon MLServer as a `make bench` baseline: its own venv, its config, and a running server.

MLServer pins its own FastAPI, Starlette, uvloop and OpenTelemetry versions, so it lives in a venv
of its own (`.venv-mlserver` beside `.venv`, made on first use) and never in the project's. The
model is the very file the bench trained for mlqueue (checked against its manifest's digest):
MLServer's scikit-learn runtime loads our joblib artifact as is, and its venv gets the same
scikit-learn release so that the file unpickles to the same trees.

Configuration is the one a user would pick for small predictions: adaptive batching (64 rows or
2 ms), two inference workers (one per core), no access log; everything listens on 127.0.0.1.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import joblib
import sklearn

from devrun import processes
from shared.registry import sha256_file
from worker.sklearn_model import SklearnModel

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / ".venv-mlserver"
MODEL = "demo"
# uvloop 0.21.0: with 0.23 MLServer 1.7.1's inference workers crash at start (upstream #2286).
REQUIREMENTS = (
    "mlserver==1.7.1",
    "mlserver-sklearn==1.7.1",
    "uvloop==0.21.0",
    f"scikit-learn=={sklearn.__version__}",
)
BATCH_SIZE, BATCH_TIME_S, PARALLEL_WORKERS = 64, 0.002, 2
INSTALL_TIMEOUT_S, READY_TIMEOUT_S = 1200, 180


def ensure_venv(venv: Path = VENV) -> Path:
    """The `mlserver` executable, installing the venv first if it is missing or outdated."""
    marker = venv / ".mlserver-requirements"
    wanted = "\n".join(REQUIREMENTS) + "\n"
    if marker.exists() and marker.read_text() == wanted:
        return venv / "bin" / "mlserver"
    print(f"bench: installing MLServer into {venv} (first run only) ...", file=sys.stderr)
    # Nothing of the project's own environment may leak into that venv's pip or Python.
    env = {**os.environ, "PYTHONPATH": ""}
    env.pop("VIRTUAL_ENV", None)
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True, timeout=120)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet"]
    log = venv / "install.log"
    with log.open("w") as out:
        for argv in ([*pip, "--upgrade", "pip"], [*pip, *REQUIREMENTS]):
            done = subprocess.run(
                argv, env=env, stdout=out, stderr=subprocess.STDOUT, timeout=INSTALL_TIMEOUT_S
            )
            if done.returncode:
                raise RuntimeError(f"installing MLServer failed ({' '.join(argv)}); see {log}")
    marker.write_text(wanted)
    return venv / "bin" / "mlserver"


def write_config(model_path: Path, sha256: str, folder: Path, ports: tuple[int, int, int]) -> Path:
    """settings.json and the model's model-settings.json under `folder`; returns `folder`."""
    if sha256_file(model_path) != sha256:
        raise RuntimeError(f"{model_path} does not match its manifest's sha256")
    http, grpc, metrics = ports
    (folder / MODEL).mkdir(parents=True, exist_ok=True)
    if model_path.suffix != ".joblib":
        # MLServer's scikit-learn runtime reads joblib files only; the demo model is saved in
        # skops format. The same fitted estimator (loaded from the verified file) is handed over.
        estimator = SklearnModel.load(model_path, fast=False).estimator
        model_path = folder / MODEL / "model.joblib"
        joblib.dump(estimator, model_path)
    settings = {
        "host": "127.0.0.1",
        "http_port": http,
        "grpc_port": grpc,
        "metrics_port": metrics,
        "parallel_workers": PARALLEL_WORKERS,
        "debug": False,  # no access log line per request (the mlqueue gateway logs none either)
        "load_models_at_startup": True,
        "metrics_dir": str(folder / ".metrics"),
        "environments_dir": str(folder / ".envs"),
    }
    model_settings = {
        "name": MODEL,
        "implementation": "mlserver_sklearn.SKLearnModel",
        "max_batch_size": BATCH_SIZE,
        "max_batch_time": BATCH_TIME_S,
        "parameters": {"uri": str(model_path), "version": "1"},
    }
    (folder / "settings.json").write_text(json.dumps(settings, indent=2))
    (folder / MODEL / "model-settings.json").write_text(json.dumps(model_settings, indent=2))
    return folder


def ready(url: str) -> bool:
    """Whether the demo model answers `GET /v2/models/demo/ready` with 200."""
    try:
        return httpx.get(f"{url}/v2/models/{MODEL}/ready", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


@contextmanager
def running(model_path: Path, sha256: str, work: Path, log: Path) -> Iterator[str]:
    """MLServer serving `model_path` on 127.0.0.1; yields its base URL, stops its process group."""
    executable = ensure_venv()
    ports = (processes.free_port(), processes.free_port(), processes.free_port())
    folder = write_config(model_path, sha256, work / "mlserver", ports)
    proc = processes.spawn([str(executable), "start", str(folder)], {"PYTHONPATH": ""}, log=log)
    url = f"http://127.0.0.1:{ports[0]}"
    try:
        processes.wait_until(lambda: ready(url), READY_TIMEOUT_S, "MLServer model ready", proc)
        yield url
    finally:
        processes.stop(proc)
