"""The pages the app serves itself: ``/dashboard`` and the API reference (``/docs``,
``/redoc``), with every asset shipped in the package (``static/``; the third-party ones,
uPlot, Swagger UI and ReDoc, vendored from npm under ``static/vendor/``), so they work
offline and without a build step.

The dashboard is static HTML and JavaScript that reads ``/v1/stats/...`` with the API key
the user pastes into it: the key stays in the tab's ``sessionStorage`` (gone when the tab
closes, never in a cookie or a URL) and goes out only as an ``Authorization`` header of
same-origin ``fetch`` calls. The page itself holds no data and needs no key; a strict
Content-Security-Policy (scripts from this origin only, no inline script, requests to
this origin only) keeps injected markup from running or reaching elsewhere.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, FastAPI, Request
from fastapi.openapi.docs import (
    get_redoc_html,
    get_swagger_ui_html,
    get_swagger_ui_oauth2_redirect_html,
)
from fastapi.responses import FileResponse, HTMLResponse
from fastapi.staticfiles import StaticFiles

STATIC = Path(__file__).with_name("static")
ASSETS = "/dashboard/static"
DASHBOARD_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; "
    "img-src 'self' data:; connect-src 'self'; font-src 'self'; base-uri 'none'; "
    "form-action 'none'; frame-ancestors 'none'"
)
_PAGE_HEADERS = {"Content-Security-Policy": DASHBOARD_CSP, "Referrer-Policy": "no-referrer",
                 "X-Content-Type-Options": "nosniff", "Cache-Control": "no-cache"}

router = APIRouter(include_in_schema=False)


@router.get("/dashboard")
async def dashboard() -> FileResponse:
    """The dashboard page (static; it reads the stats API with the user's key)."""
    return FileResponse(STATIC / "index.html", media_type="text/html",
                        headers=_PAGE_HEADERS)


@router.get("/docs")
async def swagger_ui(request: Request) -> HTMLResponse:
    """Swagger UI over the OpenAPI schema, from the vendored assets."""
    root = request.scope.get("root_path", "")
    return get_swagger_ui_html(
        openapi_url=f"{root}{request.app.openapi_url}",
        title=f"{request.app.title} - Swagger UI",
        oauth2_redirect_url=f"{root}/docs/oauth2-redirect",
        swagger_js_url=f"{root}{ASSETS}/vendor/swagger-ui/swagger-ui-bundle.js",
        swagger_css_url=f"{root}{ASSETS}/vendor/swagger-ui/swagger-ui.css",
        swagger_favicon_url=f"{root}{ASSETS}/favicon.svg",
    )


@router.get("/docs/oauth2-redirect")
async def swagger_ui_redirect() -> HTMLResponse:
    return get_swagger_ui_oauth2_redirect_html()


@router.get("/redoc")
async def redoc(request: Request) -> HTMLResponse:
    """ReDoc over the OpenAPI schema, from the vendored bundle (no web fonts)."""
    root = request.scope.get("root_path", "")
    return get_redoc_html(
        openapi_url=f"{root}{request.app.openapi_url}",
        title=f"{request.app.title} - ReDoc",
        redoc_js_url=f"{root}{ASSETS}/vendor/redoc/redoc.standalone.js",
        redoc_favicon_url=f"{root}{ASSETS}/favicon.svg",
        with_google_fonts=False,
    )


def install(app: FastAPI) -> None:
    """Serve the dashboard, the API reference pages and their assets on ``app`` (built
    with ``docs_url=None, redoc_url=None``)."""
    app.include_router(router)
    app.mount(ASSETS, StaticFiles(directory=STATIC), name="dashboard-static")


__all__ = ["ASSETS", "DASHBOARD_CSP", "STATIC", "install", "router"]
