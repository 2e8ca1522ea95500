"""`/v1/models`: what the registry holds, and the aliases that point into it."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Path

from gateway import alias_examples as aex
from gateway import examples as ex
from gateway.deps import AdminDep, StateDep
from shared.aliases import ALIAS_PATTERN, AliasesView, AliasTarget, HistoryView
from shared.schemas import ModelsView

router = APIRouter(prefix="/v1/models", tags=["models"])

ModelName = Annotated[
    str, Path(max_length=200, pattern=r"^[A-Za-z0-9_-][A-Za-z0-9_.-]*$", description="A model.")
]
AliasName = Annotated[
    str, Path(max_length=63, pattern=ALIAS_PATTERN, description="An alias ([a-z0-9-]+).")
]


@router.get("", responses={200: ex.answer("The registry's models.", ex.MODELS)})
async def list_models(state: StateDep) -> ModelsView:
    """Every model version with its features and holdout metrics, newest first."""
    registry = state.registry
    return ModelsView(default=registry.default, models=registry.all_versions())


@router.get("/{name}/aliases", responses=aex.ALIASES_ANSWER)
async def list_aliases(state: StateDep, name: ModelName) -> AliasesView:
    """The model's aliases and where each points."""
    await state.aliases.ensure()
    return state.aliases.view(name)


@router.put("/{name}/aliases/{alias}", responses=aex.ALIASES_ANSWER)
async def put_alias(
    state: StateDep,
    admin: AdminDep,
    name: ModelName,
    alias: AliasName,
    target: Annotated[AliasTarget, Body(openapi_examples=aex.TARGETS)],
) -> AliasesView:
    """Point an alias at a version (`{"version": 3}`), split its traffic between versions
    (`{"versions": {"3": 0.9, "4": 0.1}}`), optionally with a `shadow` version; admin key only.
    Every gateway and worker follows within a second; jobs already submitted keep their version."""
    return await state.aliases.put(name, alias, target, admin)


@router.delete("/{name}/aliases/{alias}", responses=aex.ALIASES_ANSWER)
async def delete_alias(
    state: StateDep, admin: AdminDep, name: ModelName, alias: AliasName
) -> AliasesView:
    """Remove an alias (404 if it does not exist); admin key only."""
    return await state.aliases.delete(name, alias, admin)


@router.get("/{name}/history", responses=aex.HISTORY_ANSWER)
async def alias_history(state: StateDep, name: ModelName) -> HistoryView:
    """The model's alias changes, newest first: which alias, who (the key's id), when, from, to."""
    return await state.aliases.history(name)
