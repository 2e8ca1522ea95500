"""The Celery task that vets and installs an uploaded model (`shared.model_uploads`)."""

from __future__ import annotations

from shared.tasks import VERIFY_MODEL
from worker.celery_app import app
from worker.model_install import verify_upload
from worker.runtime import runtime


# The outcome goes to Redis for the gateway (`shared.model_uploads`): no Celery result.
@app.task(name=VERIFY_MODEL, ignore_result=True)
def verify_model(upload_id: str, name: str, format: str) -> None:
    """Vet upload `upload_id` as the next version of `name` (kwargs: `VerifyModelKwargs`)."""
    rt = runtime()
    verify_upload(rt.settings, rt.jobs.redis, rt.models.registry, upload_id, name, format)
