"""``GET /docs``: Swagger UI over ``/openapi.json``, served from this process, offline.

The UI's files come from the ``swagger-ui-bundle-v2`` package (the ``gateway``
extra), read once and served under ``/docs/``: no CDN, so the page works on
a machine with no internet and leaks no request anywhere. Its start-up code is
a file too, so the page runs under a CSP without inline scripts. Without the
package, ``/docs`` says which install brings it and where the spec is.
"""

from __future__ import annotations

import html
import logging
from functools import cache
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

from starlette.responses import HTMLResponse, Response
from starlette.routing import BaseRoute, Route

if TYPE_CHECKING:
    from starlette.requests import Request

__all__ = ["CSP", "swagger_routes"]

log = logging.getLogger("organelle.gateway")

# Swagger UI sets inline styles and draws icons from data: URIs; scripts only from here.
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'"
)
_ASSETS = {
    "swagger-ui-bundle.js": "text/javascript; charset=utf-8",
    "swagger-ui.css": "text/css; charset=utf-8",
    "favicon-32x32.png": "image/png",
}
_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<link rel="stylesheet" href="/docs/swagger-ui.css">
<link rel="icon" type="image/png" href="/docs/favicon-32x32.png">
<script src="/docs/swagger-ui-bundle.js" defer></script>
<script src="/docs/docs.js" defer></script>
</head>
<body data-spec="/openapi.json">
<div id="swagger-ui"></div>
</body>
</html>
"""
_MISSING = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title></head>
<body><h1>{title}</h1>
<p>Swagger UI is not installed here: <code>pip install 'organelle[gateway]'</code> brings it.
The OpenAPI document is at <a href="/openapi.json">/openapi.json</a>.</p>
</body></html>
"""


def _bundle() -> Path | None:
    try:
        from swagger_ui_bundle import swagger_ui_path
    except ImportError:
        return None
    return Path(str(swagger_ui_path))


@cache
def _asset(name: str) -> bytes | None:
    root = _bundle()
    return None if root is None else (root / name).read_bytes()


def _init_script() -> bytes:
    return resources.files("organelle.gateway").joinpath("static/docs.js").read_bytes()


def swagger_routes(title: str) -> list[BaseRoute]:
    """``/docs`` and its files; a page naming the missing extra when the bundle is absent."""
    headers = {"content-security-policy": CSP, "referrer-policy": "no-referrer"}
    if _bundle() is None:
        log.info("no Swagger UI at /docs: pip install 'organelle[gateway]'")
        page = _MISSING.format(title=html.escape(title))

        async def missing(_: Request) -> Response:
            return HTMLResponse(page, headers=headers)

        return [Route("/docs", missing, methods=["GET"], include_in_schema=False)]
    body = _PAGE.format(title=html.escape(title))

    async def docs(_: Request) -> Response:
        return HTMLResponse(body, headers=headers)

    def serve(name: str, media_type: str) -> Route:
        async def asset(_: Request) -> Response:
            data = _init_script() if name == "docs.js" else _asset(name)
            return Response(
                data, media_type=media_type, headers={"cache-control": "public, max-age=3600"}
            )

        return Route(f"/docs/{name}", asset, methods=["GET"], include_in_schema=False)

    return [
        Route("/docs", docs, methods=["GET"], include_in_schema=False),
        serve("docs.js", "text/javascript; charset=utf-8"),
        *(serve(name, kind) for name, kind in _ASSETS.items()),
    ]
