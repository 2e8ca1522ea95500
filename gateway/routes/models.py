"""`/v1/models`: what the registry holds."""

from __future__ import annotations

from fastapi import APIRouter

from gateway import examples as ex
from gateway.deps import RegistryDep
from shared.schemas import ModelsView

router = APIRouter(prefix="/v1/models", tags=["models"])


@router.get("", responses={200: ex.answer("The registry's models.", ex.MODELS)})
def list_models(registry: RegistryDep) -> ModelsView:
    """Every model version with its features and holdout metrics, newest first."""
    return ModelsView(default=registry.default, models=registry.all_versions())
