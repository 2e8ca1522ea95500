"""`/v1/models`: what the registry holds."""

from __future__ import annotations

from fastapi import APIRouter

from gateway import examples as ex
from gateway.deps import StateDep
from shared.schemas import ModelsView

router = APIRouter(prefix="/v1/models", tags=["models"])


@router.get("", responses={200: ex.answer("The registry's models.", ex.MODELS)})
async def list_models(state: StateDep) -> ModelsView:
    """Every model version with its features and holdout metrics, newest first."""
    registry = state.registry
    return ModelsView(default=registry.default, models=registry.all_versions())
