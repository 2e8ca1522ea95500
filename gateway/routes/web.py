"""The web page at `/`: static HTML and JS that use the public API like any other client."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

STATIC_DIR = Path(__file__).resolve().parent.parent / "static"

router = APIRouter(tags=["web"])


@router.get("/", include_in_schema=False)
async def index() -> FileResponse:
    """The page: models, CSV upload with progress, download of the predictions."""
    return FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-cache"})


def static_files() -> StaticFiles:
    """The page's scripts and styles, served under `/static`."""
    return StaticFiles(directory=STATIC_DIR)
