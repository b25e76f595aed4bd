"""Reviewer pages: the queue of submitted requests with their warrants; approve or reject."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Form, Request
from fastapi.responses import Response
from pydantic import ValidationError

from app.accounts.models import User
from app.deps import NowDep, PrincipalDep, RowId, SessionDep, require
from app.errors import AppError
from app.requests import schemas
from app.requests import service as requests
from app.web.render import attempt, page_router, render, see_other

router = page_router(prefix="/review", tags=["pages"])

Reviewer = Annotated[User, Depends(require("request:review"))]

DONE = {
    "approve": "Approved. Once enough reviewers approve, residents near the area are asked.",
    "reject": "Rejected. The requester sees your reason; no resident was asked.",
}


def _queue(
    request: Request,
    user: User,
    principal: PrincipalDep,
    session: SessionDep,
    now: NowDep,
    *,
    errors: dict[int, dict[str, str]] | None = None,
    values: dict[int, dict[str, str]] | None = None,
    status_code: int = 200,
) -> Response:
    rows = requests.awaiting_review(session, user, now)
    queue = [requests.request_out(session, r) for r in rows]
    return render(
        request,
        "reviewer/queue.html",
        {
            "title": "Review queue",
            "queue": queue,
            # Approving these is refused (409): say so before the reviewer tries.
            "expired": {r.id for r in rows if requests.warrant_expired(r, now)},
            # An error about a request no longer in the queue (decided meanwhile, or unknown)
            # has no card to show it beside: it goes above the queue.
            "other_errors": [
                message
                for request_id, problems in (errors or {}).items()
                if request_id not in {r.id for r in rows}
                for message in problems.values()
            ],
            "errors": errors or {},
            "values": values or {},
            "done": DONE.get(request.query_params.get("done", "")),
        },
        principal=principal,
        status_code=status_code,
    )


@router.get("")
def queue_page(
    request: Request, user: Reviewer, principal: PrincipalDep, session: SessionDep, now: NowDep
) -> Response:
    """Submitted requests awaiting review, with warrant details (a logged read)."""
    return _queue(request, user, principal, session, now)


@router.post("/{request_id}")
def review(
    request: Request,
    request_id: RowId,
    user: Reviewer,
    principal: PrincipalDep,
    session: SessionDep,
    now: NowDep,
    decision: Annotated[str, Form()] = "",
    reason: Annotated[str, Form()] = "",
) -> Response:
    """Approve or reject with a reason."""
    errors: dict[str, str] = {}
    # The form's own checks are 422; a service error keeps its own status, as in the API.
    status_code = 422
    if decision not in {"approve", "reject"}:
        errors["decision"] = "choose approve or reject"
    if not reason.strip():
        errors["reason"] = "give a reason: the requester and the auditors will read it"
    elif len(reason) > 2000:
        errors["reason"] = "keep the reason under 2000 characters"
    if not errors:
        try:
            # A browser sends a textarea's line breaks as CR LF; the API takes LF only, and
            # refuses any other control or formatting character (schemas.ReviewIn).
            body = schemas.ReviewIn.model_validate(
                {"decision": decision, "reason": reason.strip().replace("\r\n", "\n")}
            )
        except ValidationError as error:
            errors = {str(item["loc"][-1]): str(item["msg"]) for item in error.errors()}
    if not errors:
        outcome = attempt(session, lambda: requests.review(session, user, request_id, body, now))
        if not isinstance(outcome, AppError):
            return see_other(f"/review?done={decision}")
        errors, status_code = {"": outcome.message}, outcome.status_code
    return _queue(
        request,
        user,
        principal,
        session,
        now,
        errors={request_id: errors},
        values={request_id: {"decision": decision, "reason": reason}},
        status_code=status_code,
    )
