"""The API explorer at `/docs`, served entirely by this server.

FastAPI's default explorer page loads Swagger UI from a public CDN, so every visit would tell
a third party that someone is reading this community's API. Here the page, Swagger UI's
script and stylesheet (from the `swagger-ui-py` package, which ships Swagger UI 5) and the
start-up script (app/static/api-docs.js) all come from the server itself, under the site's
strict CSP: no inline script, nothing from anywhere else.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from fastapi import Response
from fastapi.responses import HTMLResponse

from app.deps import make_router
from app.errors import NotFound

router = make_router(include_in_schema=False)

# An allow-list: a request can never name another file of the package.
_ASSETS = {
    "swagger-ui-bundle.js": "text/javascript; charset=utf-8",
    "swagger-ui.css": "text/css; charset=utf-8",
    "favicon-32x32.png": "image/png",
}

_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Porchlight API</title>
<link rel="stylesheet" href="/docs/assets/swagger-ui.css">
<link rel="icon" type="image/png" href="/docs/assets/favicon-32x32.png">
</head>
<body>
<main id="swagger-ui"></main>
<script src="/docs/assets/swagger-ui-bundle.js"></script>
<script src="/static/api-docs.js"></script>
</body>
</html>
"""


def _asset_dir() -> Path:
    # Found without importing the package (its import pulls in its own web integrations).
    spec = importlib.util.find_spec("swagger_ui")
    if spec is None or not spec.submodule_search_locations:
        raise NotFound("the API explorer's files are not installed (swagger-ui-py)")
    return Path(next(iter(spec.submodule_search_locations))) / "static"


@router.get("/docs")
def api_docs() -> HTMLResponse:
    """The interactive API explorer for /openapi.json."""
    return HTMLResponse(_PAGE)


@router.get("/docs/assets/{name}")
def api_docs_asset(name: str) -> Response:
    """One of Swagger UI's files, by exact name."""
    media_type = _ASSETS.get(name)
    if media_type is None:
        raise NotFound(f"no API explorer file {name!r}")
    return Response(
        (_asset_dir() / name).read_bytes(),
        media_type=media_type,
        headers={"Cache-Control": "public, max-age=86400"},
    )
