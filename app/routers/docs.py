"""GET /docs (Swagger UI) and /redoc, served with their scripts from this server, never a CDN.

The pages' JavaScript, CSS and icon are the files the ``fastapi-offline`` package ships (MIT;
Swagger UI 5 and ReDoc 2), served under ``/docs/assets/``, so the docs work on a machine with
no internet access.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from importlib.resources import files
from pathlib import Path

from fastapi import FastAPI
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.responses import FileResponse, HTMLResponse

DOCS_URL = "/docs"
REDOC_URL = "/redoc"
OAUTH2_REDIRECT_URL = "/docs/oauth2-redirect"
ASSETS_URL = "/docs/assets"

ASSETS = {  # file shipped by fastapi-offline: its media type
    "swagger-ui-bundle.js": "text/javascript",
    "swagger-ui.css": "text/css",
    "redoc.standalone.js": "text/javascript",
    "favicon.png": "image/png",
}


# The pages may load nothing from elsewhere (ReDoc's footer would fetch its logo from a CDN).
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; font-src 'self' data:; worker-src 'self' blob:; connect-src 'self'"
)


def assets_dir() -> Path:
    """The folder of the packaged Swagger UI and ReDoc files."""
    return Path(str(files("fastapi_offline") / "static"))


def install_docs(app: FastAPI) -> list[str]:
    """Add the docs pages and their assets to ``app`` (built with ``docs_url=None, redoc_url=None``);
    returns every path they answer on, for access control."""
    title = f"{app.title} - API"

    async def swagger_ui() -> HTMLResponse:
        return _local_only(
            get_swagger_ui_html(
                openapi_url=app.openapi_url or "/openapi.json",
                title=title,
                swagger_js_url=f"{ASSETS_URL}/swagger-ui-bundle.js",
                swagger_css_url=f"{ASSETS_URL}/swagger-ui.css",
                swagger_favicon_url=f"{ASSETS_URL}/favicon.png",
                oauth2_redirect_url=OAUTH2_REDIRECT_URL,
            )
        )

    async def oauth2_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    async def redoc() -> HTMLResponse:
        return _local_only(
            get_redoc_html(
                openapi_url=app.openapi_url or "/openapi.json",
                title=title,
                redoc_js_url=f"{ASSETS_URL}/redoc.standalone.js",
                redoc_favicon_url=f"{ASSETS_URL}/favicon.png",
                with_google_fonts=False,
            )
        )

    app.add_api_route(DOCS_URL, swagger_ui, include_in_schema=False)
    app.add_api_route(OAUTH2_REDIRECT_URL, oauth2_redirect, include_in_schema=False)
    app.add_api_route(REDOC_URL, redoc, include_in_schema=False)
    folder = assets_dir()
    for name, media_type in ASSETS.items():
        app.add_api_route(f"{ASSETS_URL}/{name}", _asset(folder / name, media_type), include_in_schema=False)
    return [DOCS_URL, OAUTH2_REDIRECT_URL, REDOC_URL, *(f"{ASSETS_URL}/{name}" for name in ASSETS)]


def _local_only(page: HTMLResponse) -> HTMLResponse:
    page.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    return page


def _asset(path: Path, media_type: str) -> Callable[[], Awaitable[FileResponse]]:
    async def serve() -> FileResponse:
        return FileResponse(path, media_type=media_type, headers={"Cache-Control": "public, max-age=86400"})

    return serve
