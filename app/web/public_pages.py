"""Public pages (no sign-in): the plain-language promises."""

from __future__ import annotations

from fastapi import Request
from fastapi.responses import Response

from app.web.render import VisitorDep, page_router, render

router = page_router(tags=["pages"])


@router.get("/promises")
def promises(request: Request, principal: VisitorDep) -> Response:
    """What Porchlight promises, in plain words, and how each promise can be checked."""
    return render(request, "public/promises.html", {"title": "Our promises"}, principal=principal)
