"""The explain page (`/ui`) and the API docs (`/docs`, `/redoc`), every asset served by the API itself.

`/ui` is a static page (`static/ui.html`, `ui.js`, `ui.css`: plain JavaScript and SVG, no
framework, nothing from a CDN) that reads the API's own JSON routes: the registered
timelines and their workflow trees (`GET /timelines`, `GET /timelines/{name}`), a key search
over `GET /timelines/{name}/keys`, and for one key every node's timeline
(`GET /timelines/{name}/keys/{key}/tree`), plotted on one time axis: bands for state and
boolean nodes, lines for numeric ones, unknown stretches shaded, provisional parts (past the
watermark) hatched. With "live" on it polls every 2 seconds.

Swagger UI and ReDoc load their JavaScript and CSS from the copies shipped in the
fastapi-offline package (MIT; Swagger UI and ReDoc are Apache-2.0 / MIT), mounted under
`/docs-assets`, so `/docs` works without internet.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from fastapi import FastAPI
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles

STATIC = Path(str(files("timeline.api") / "static"))
DOCS_ASSETS = "/docs-assets"
UI_ASSETS = "/ui-assets"


def _swagger_assets() -> Path:
    import fastapi_offline

    return Path(fastapi_offline.__file__).parent / "static"


def install_ui(app: FastAPI) -> None:
    """`/ui` and its assets, and `/docs` + `/redoc` with local assets (create the app with
    docs_url=None, redoc_url=None so that FastAPI's CDN-based pages are not registered)."""
    app.mount(UI_ASSETS, StaticFiles(directory=STATIC), name="ui-assets")
    app.mount(DOCS_ASSETS, StaticFiles(directory=_swagger_assets()), name="docs-assets")

    @app.get("/ui", include_in_schema=False)
    async def ui() -> FileResponse:
        return FileResponse(STATIC / "ui.html", media_type="text/html")

    @app.get("/", include_in_schema=False)
    async def root() -> RedirectResponse:
        return RedirectResponse("/ui")

    @app.get("/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=app.openapi_url or "/openapi.json", title=f"{app.title} - API docs",
            swagger_js_url=f"{DOCS_ASSETS}/swagger-ui-bundle.js", swagger_css_url=f"{DOCS_ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{DOCS_ASSETS}/favicon.png", oauth2_redirect_url="/docs/oauth2-redirect")

    @app.get("/docs/oauth2-redirect", include_in_schema=False)
    async def oauth2_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    @app.get("/redoc", include_in_schema=False)
    async def redoc() -> HTMLResponse:
        return get_redoc_html(openapi_url=app.openapi_url or "/openapi.json", title=f"{app.title} - ReDoc",
                              redoc_js_url=f"{DOCS_ASSETS}/redoc.standalone.js",
                              redoc_favicon_url=f"{DOCS_ASSETS}/favicon.png", with_google_fonts=False)
