"""Every (method, path) the app serves, flattened across included routers.

FastAPI 0.16x keeps included routers as lazy `_IncludedRouter` entries in `app.routes`; this
walks them through `effective_route_contexts()` so the role-by-route test sees every route.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from fastapi import FastAPI

DOC_METHODS = frozenset({"HEAD", "OPTIONS"})


def _walk(routes: Iterable[Any]) -> Iterable[tuple[str, Any]]:
    for route in routes:
        contexts = getattr(route, "effective_route_contexts", None)
        if contexts is not None:
            for context in contexts():
                yield context.path, context.original_route
        else:
            yield getattr(route, "path", ""), route


def route_keys(app: FastAPI) -> list[tuple[str, str]]:
    """Sorted (METHOD, path) pairs, HEAD/OPTIONS left out (Starlette adds HEAD to GET)."""
    keys: set[tuple[str, str]] = set()
    for path, route in _walk(app.routes):
        methods = getattr(route, "methods", None) or {"*"}
        for method in methods:
            if method not in DOC_METHODS:
                keys.add((method, path))
    return sorted(keys)
