"""The stylesheet and the little JavaScript there is, served from app/static by exact name."""

from __future__ import annotations

from pathlib import Path

from fastapi import Response

from app.deps import make_router
from app.errors import NotFound

STATIC_DIR = Path(__file__).resolve().parents[1] / "static"
_TYPES = {
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".svg": "image/svg+xml",
}

router = make_router(include_in_schema=False)


def _files() -> dict[str, Path]:
    # An allow-list of the directory's files: a request can never name a path outside it.
    return {p.name: p for p in STATIC_DIR.iterdir() if p.is_file() and p.suffix in _TYPES}


@router.get("/static/{name}")
def static_file(name: str) -> Response:
    """A static file (CSS or JS) by name."""
    path = _files().get(name)
    if path is None:
        raise NotFound(f"no static file {name!r}")
    return Response(
        path.read_bytes(),
        media_type=_TYPES[path.suffix],
        headers={"Cache-Control": "public, max-age=3600"},
    )
