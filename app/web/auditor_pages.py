"""Auditor pages: every request with its full timeline, the log browser with inclusion proofs,
the latest checkpoint verified (signature, root, cosignatures), who holds the trusted roles and
who appointed them, and exports. Read-only."""

from __future__ import annotations

import csv
import io
from typing import Annotated

from fastapi import Depends, Query, Request
from fastapi.responses import Response
from sqlalchemy import or_, select

from app.accounts import service as accounts
from app.accounts.models import User
from app.agencies import service as agencies
from app.audit import integrator
from app.audit import service as audit
from app.audit.models import LogEntry
from app.deps import NowDep, PrincipalDep, RowId, SessionDep, require
from app.log import reports
from app.log.keys import LogSigner
from app.requests import service as requests
from app.requests.models import Ask, SharedClip
from app.web import log_check
from app.web.render import page_router, render

router = page_router(prefix="/audit", tags=["pages"])

RequestReader = Annotated[User, Depends(require("request:read_all"))]
LogReader = Annotated[User, Depends(require("log:read"))]
PeopleAuditor = Annotated[User, Depends(require("person:audit"))]
PAGE_SIZE = 50


@router.get("/requests")
def all_requests(
    request: Request, user: RequestReader, principal: PrincipalDep, session: SessionDep
) -> Response:
    """Every request and its state."""
    names = {a.id: a.name for a in agencies.list_agencies(session)}
    return render(
        request,
        "auditor/requests.html",
        {
            "title": "All requests",
            "requests": requests.agency_requests(session, user),
            "agency_names": names,
        },
        principal=principal,
    )


def _timeline(session: SessionDep, request_id: int) -> list[reports.EntryView]:
    """Every log entry about the request, its asks and its shared clips, in log order.

    Pending entries are integrated first, so a change committed before the page is read is on
    it (see app.audit.integrator)."""
    integrator.catch_up(session)
    ask_ids = session.scalars(select(Ask.id).where(Ask.request_id == request_id)).all()
    clip_ids = (
        session.scalars(select(SharedClip.id).where(SharedClip.ask_id.in_(ask_ids))).all()
        if ask_ids
        else []
    )
    subjects = [
        f"request:{request_id}",
        *(f"ask:{a}" for a in ask_ids),
        *(f"shared_clip:{c}" for c in clip_ids),
    ]
    rows = session.scalars(
        select(LogEntry).where(or_(LogEntry.subject.in_(subjects))).order_by(LogEntry.index)
    ).all()
    return [reports._view(row) for row in rows]


@router.get("/requests/{request_id}")
def request_timeline(
    request: Request,
    request_id: RowId,
    user: RequestReader,
    principal: PrincipalDep,
    session: SessionDep,
    now: NowDep,
) -> Response:
    """A request's full record and timeline (a logged read)."""
    footage_request = requests.read_request(session, user, request_id, now)
    return render(
        request,
        "auditor/request.html",
        {
            "title": f"Request #{request_id}",
            "r": requests.request_out(session, footage_request),
            "timeline": _timeline(session, request_id),
        },
        principal=principal,
    )


@router.get("/log")
def log_browser(
    request: Request,
    _: LogReader,
    principal: PrincipalDep,
    session: SessionDep,
    start: Annotated[int, Query(ge=0)] = 0,
    proof: Annotated[int | None, Query(ge=0)] = None,
) -> Response:
    """Log entries, a page at a time, with an entry's inclusion proof on request."""
    return render(
        request,
        "auditor/log.html",
        {
            "title": "Log",
            "entries": reports.entries(session, start=start, limit=PAGE_SIZE),
            "start": start,
            "page_size": PAGE_SIZE,
            "size": audit.size(session),
            "inclusion": log_check.check_inclusion(session, proof) if proof is not None else None,
            "proof_index": proof,
        },
        principal=principal,
    )


@router.get("/checkpoint")
def checkpoint_page(
    request: Request, _: LogReader, principal: PrincipalDep, session: SessionDep
) -> Response:
    """The latest checkpoint: log signature, root recomputed from the entries, cosignatures."""
    signer: LogSigner = request.app.state.log_signer
    return render(
        request,
        "auditor/checkpoint.html",
        {
            "title": "Checkpoint",
            "check": log_check.check_latest(session, signer),
            "verifier_key": signer.verifier_key,
        },
        principal=principal,
    )


@router.get("/people")
def role_holders(
    request: Request, _: PeopleAuditor, principal: PrincipalDep, session: SessionDep
) -> Response:
    """Who holds the reviewer, auditor and admin roles, and who appointed each (not a read of
    warrant details, so not logged)."""
    return render(
        request,
        "auditor/people.html",
        {"title": "Who holds which role", "holders": accounts.appointments(session)},
        principal=principal,
    )


@router.get("/export/requests.csv")
def export_requests(user: RequestReader, session: SessionDep, now: NowDep) -> Response:
    """Every request record as CSV (no footage, no device or resident identities): a logged
    read of every request's warrant details."""
    rows = requests.agency_requests(session, user)
    ids = [r.id for r in rows]
    # One entry for the whole export, in this transaction; ids as a count and range (every
    # request up to `last` is in it), since a list could outgrow an entry's 64 KiB.
    audit.append(
        session,
        f"user:{user.id}",
        "request:export",
        f"user:{user.id}",
        {"requests": len(ids), "first": min(ids, default=None), "last": max(ids, default=None)},
        now=now,
    )
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(
        [
            "id",
            "state",
            "agency_id",
            "offence",
            "window_start",
            "window_end",
            "radius_m",
            "court",
            "docket_number",
            "judge",
            "issued_on",
            "expires_on",
            "document_sha256",
            "created_at",
            "decided_at",
            "decision_reason",
            "closed_at",
        ]
    )
    for r in rows:
        writer.writerow(
            _cell(value)
            for value in [
                r.id,
                r.state,
                r.agency_id,
                r.offence,
                r.window_start.isoformat(),
                r.window_end.isoformat(),
                r.area_radius_m,
                r.warrant_court,
                r.warrant_docket_number,
                r.warrant_judge,
                r.warrant_issued_on.isoformat(),
                r.warrant_expires_on.isoformat(),
                r.warrant_document_sha256,
                r.created_at.isoformat(),
                r.decided_at.isoformat() if r.decided_at else "",
                r.decision_reason or "",
                r.closed_at.isoformat() if r.closed_at else "",
            ]
        )
    return Response(
        out.getvalue(),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": 'attachment; filename="porchlight-requests.csv"'},
    )


# A spreadsheet runs a cell that starts with one of these as a formula (OWASP "CSV
# injection"); the export's text comes from requesters (offence, warrant fields) and reviewers.
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def _cell(value: object) -> object:
    """A CSV cell that an auditor's spreadsheet shows as text, never runs as a formula."""
    if isinstance(value, str) and value.startswith(_FORMULA_STARTS):
        return "'" + value
    return value
