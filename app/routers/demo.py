"""GET /: a browser page to try the service: upload a file, or speak into the microphone."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

STATIC = Path(__file__).resolve().parent.parent / "static"

router = APIRouter(tags=["demo"])


@router.get("/", include_in_schema=False)
async def index() -> FileResponse:
    """The demo page (plain HTML and JavaScript, no build step)."""
    return FileResponse(STATIC / "index.html", media_type="text/html")


def mount_static(app: FastAPI) -> None:
    """Serve the page's scripts under /static."""
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
