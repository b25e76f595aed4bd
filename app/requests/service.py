"""Requests and reviews: submitting (warrant and policy checks), reading, reviewing, closing."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, date, datetime, time, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.accounts.models import User
from app.agencies.models import Agency
from app.audit import service as audit
from app.errors import Conflict, InvalidInput, NotFound, NotPermitted
from app.policy import service as policies
from app.requests import matching, schemas
from app.requests.models import FootageRequest, RequestReview
from app.requests.transitions import request_transition
from porchlight.warrant import warrant_commitment

# Requests that count against the agency's cap: not yet decided, or still collecting answers.
ACTIVE_STATES = ("submitted", "approved", "open")


def _day_start(day: date) -> datetime:
    return datetime.combine(day, time.min, tzinfo=UTC)


def warrant_end(expires_on: date) -> datetime:
    """The end of the warrant's expiry day (24:00 UTC): it authorises nothing from then on."""
    return _day_start(expires_on) + timedelta(days=1)


def warrant_expired(footage_request: FootageRequest, now: datetime) -> bool:
    return now >= warrant_end(footage_request.warrant_expires_on)


def _check_submission(body: schemas.RequestIn, policy: policies.Policy, now: datetime) -> None:
    """The DESIGN "Submitted" rules; each failure names the field it is about."""
    warrant = body.warrant
    if warrant.expires_on < warrant.issued_on:
        raise InvalidInput("warrant.expires_on: the warrant expires before it was issued")
    if warrant.issued_on > now.date():
        raise InvalidInput("warrant.issued_on: the warrant's issue date is in the future")
    if warrant.expires_on < now.date():
        raise InvalidInput(f"warrant.expires_on: the warrant expired on {warrant.expires_on}")
    start, end = body.window_start.astimezone(UTC), body.window_end.astimezone(UTC)
    if end <= start:
        raise InvalidInput("window_end: the time window must end after it starts")
    if start < _day_start(warrant.issued_on):
        raise InvalidInput(
            f"window_start: the window starts before the warrant was issued ({warrant.issued_on})"
        )
    if end > warrant_end(warrant.expires_on):
        raise InvalidInput(
            f"window_end: the window ends after the warrant expires ({warrant.expires_on})"
        )
    hours = (end - start).total_seconds() / 3600
    if hours > policy.max_window_hours:
        raise InvalidInput(
            f"window_end: a window of {hours:g} h exceeds this community's maximum of "
            f"{policy.max_window_hours} h"
        )
    if body.area.radius_m > policy.max_radius_m:
        raise InvalidInput(
            f"area.radius_m: {body.area.radius_m} m exceeds this community's maximum of "
            f"{policy.max_radius_m} m"
        )


def submit(
    session: Session, requester: User, body: schemas.RequestIn, now: datetime
) -> FootageRequest:
    """File a request for the requester's agency (422 naming the field on any rule broken)."""
    if requester.agency_id is None:
        raise NotPermitted("requesters must belong to an agency")
    policy = policies.current(session)
    _check_submission(body, policy, now)
    # Serialise submissions per agency so two at once cannot both slip under the cap.
    session.execute(select(Agency.id).where(Agency.id == requester.agency_id).with_for_update())
    active = session.scalar(
        select(func.count())
        .select_from(FootageRequest)
        .where(
            FootageRequest.agency_id == requester.agency_id,
            FootageRequest.state.in_(ACTIVE_STATES),
        )
    )
    if (active or 0) >= policy.max_open_per_agency:
        raise InvalidInput(
            f"agency: your agency already has {active} requests under review or open; "
            f"this community allows {policy.max_open_per_agency} (close one first)"
        )
    warrant = body.warrant
    footage_request = FootageRequest(
        agency_id=requester.agency_id,
        requester_id=requester.id,
        state="submitted",
        warrant_court=warrant.court,
        warrant_docket_number=warrant.docket_number,
        warrant_judge=warrant.judge,
        warrant_issued_on=warrant.issued_on,
        warrant_expires_on=warrant.expires_on,
        warrant_document_sha256=warrant.document_sha256,
        offence=body.offence,
        window_start=body.window_start.astimezone(UTC),
        window_end=body.window_end.astimezone(UTC),
        area_lat=body.area.lat,
        area_lon=body.area.lon,
        area_radius_m=body.area.radius_m,
        created_at=now,
    )
    session.add(footage_request)
    session.flush()
    # Creation is not a transition (no prior state): its one entry is request:submit.
    audit.append(
        session,
        f"user:{requester.id}",
        "request:submit",
        f"request:{footage_request.id}",
        {
            "agency": requester.agency_id,
            # A commitment, not the fields: reading the log must not read warrant details
            # (porchlight.warrant says why and how auditors check it).
            "warrant_sha256": warrant_commitment(
                warrant_out(footage_request).model_dump(mode="json")
            ),
            "window": [
                footage_request.window_start.isoformat(),
                footage_request.window_end.isoformat(),
            ],
            "radius_m": body.area.radius_m,
        },
        now=now,
    )
    return footage_request


def agency_requests(session: Session, user: User) -> Sequence[FootageRequest]:
    """A requester's agency's requests; an auditor's (request:read_all) every request."""
    query = select(FootageRequest).order_by(FootageRequest.id.desc())
    if user.role == "requester":
        query = query.where(FootageRequest.agency_id == user.agency_id)
    return session.scalars(query).all()


def visible_request(
    session: Session, user: User, request_id: int, *, lock: bool = False
) -> FootageRequest:
    """A request the user may see: own agency for requesters (404 otherwise), any for auditors."""
    query = select(FootageRequest).where(FootageRequest.id == request_id)
    if user.role == "requester":
        query = query.where(FootageRequest.agency_id == user.agency_id)
    if lock:
        query = query.with_for_update()
    footage_request = session.scalar(query)
    if footage_request is None:
        raise NotFound(f"request {request_id} not found")
    return footage_request


def read_request(session: Session, user: User, request_id: int, now: datetime) -> FootageRequest:
    """The full request with its warrant: a logged read."""
    footage_request = visible_request(session, user, request_id)
    audit.append(session, f"user:{user.id}", "request:read", f"request:{request_id}", {}, now=now)
    return footage_request


def close(session: Session, user: User, request_id: int, now: datetime) -> FootageRequest:
    """The requester ends collection; shared clips stay for the access window."""
    footage_request = visible_request(session, user, request_id, lock=True)
    close_request(session, footage_request, f"user:{user.id}", now)
    return footage_request


def close_request(
    session: Session, footage_request: FootageRequest, actor: str, now: datetime
) -> None:
    policy = policies.current(session)
    request_transition(session, footage_request, "close", actor, now)
    footage_request.closed_at = now
    footage_request.access_until = now + timedelta(days=policy.access_window_days)


def awaiting_review(session: Session, reviewer: User, now: datetime) -> Sequence[FootageRequest]:
    """Submitted requests this reviewer may review (a logged read: warrant details)."""
    query = (
        select(FootageRequest)
        .where(FootageRequest.state == "submitted", FootageRequest.requester_id != reviewer.id)
        .order_by(FootageRequest.id)
    )
    if reviewer.agency_id is not None:
        query = query.where(FootageRequest.agency_id != reviewer.agency_id)
    rows = session.scalars(query).all()
    audit.append(
        session,
        f"user:{reviewer.id}",
        "review:list",
        f"user:{reviewer.id}",
        {"requests": [r.id for r in rows]},
        now=now,
    )
    return rows


def review(
    session: Session, reviewer: User, request_id: int, body: schemas.ReviewIn, now: datetime
) -> FootageRequest:
    """Approve or reject; on the final approval the asks go out and the request opens."""
    footage_request = session.scalar(
        select(FootageRequest).where(FootageRequest.id == request_id).with_for_update()
    )
    if footage_request is None:
        raise NotFound(f"request {request_id} not found")
    if footage_request.requester_id == reviewer.id or (
        reviewer.agency_id is not None and reviewer.agency_id == footage_request.agency_id
    ):
        raise NotPermitted("a request cannot be reviewed from the requesting agency")
    if footage_request.state != "submitted":
        raise Conflict(
            f"request {request_id} is {footage_request.state}; it is not awaiting review"
        )
    if body.decision == "approve" and warrant_expired(footage_request, now):
        # Checked at submission, but review can come days later: an expired warrant
        # authorises no one to be asked. Rejecting stays possible, so the request can end.
        raise Conflict(
            f"the warrant expired on {footage_request.warrant_expires_on}, so request "
            f"{request_id} can no longer be approved: reject it, giving that as the reason; "
            "the requester can file a new request under a current warrant"
        )
    if (
        session.scalar(
            select(RequestReview.id).where(
                RequestReview.request_id == request_id, RequestReview.reviewer_id == reviewer.id
            )
        )
        is not None
    ):
        raise Conflict("you have already reviewed this request; another reviewer must")
    session.add(
        RequestReview(
            request_id=request_id,
            reviewer_id=reviewer.id,
            decision=body.decision,
            reason=body.reason,
            created_at=now,
        )
    )
    session.flush()
    actor = f"user:{reviewer.id}"
    if body.decision == "reject":
        request_transition(session, footage_request, "reject", actor, now, {"reason": body.reason})
        footage_request.decided_at, footage_request.decision_reason = now, body.reason
        return footage_request
    policy = policies.current(session)
    approvals = (
        session.scalar(
            select(func.count())
            .select_from(RequestReview)
            .where(RequestReview.request_id == request_id, RequestReview.decision == "approve")
        )
        or 0
    )
    if approvals < policy.reviewers_required:
        # Not a transition: the request stays submitted until enough reviewers approve.
        audit.append(
            session,
            actor,
            "request:review",
            f"request:{request_id}",
            {
                "decision": "approve",
                "reason": body.reason,
                "approvals": approvals,
                "required": policy.reviewers_required,
            },
            now=now,
        )
        return footage_request
    request_transition(session, footage_request, "approve", actor, now, {"reason": body.reason})
    footage_request.decided_at, footage_request.decision_reason = now, body.reason
    # Residents answer under the warrant: their time to answer ends when it does, if sooner.
    deadline = min(
        now + timedelta(days=policy.ask_deadline_days),
        warrant_end(footage_request.warrant_expires_on),
    )
    asks = matching.create_asks(session, footage_request, deadline, now)
    footage_request.opened_at, footage_request.deadline = now, deadline
    request_transition(
        session,
        footage_request,
        "open",
        "system",
        now,
        {"asks": asks, "deadline": deadline.isoformat()},
    )
    return footage_request


def request_out(session: Session, footage_request: FootageRequest) -> schemas.RequestOut:
    agency = session.get(Agency, footage_request.agency_id)
    officer = session.get(User, footage_request.requester_id)
    assert agency is not None and officer is not None
    return schemas.RequestOut(
        **summary(footage_request).model_dump(),
        agency=agency.name,
        jurisdiction=agency.jurisdiction,
        officer=officer.username,
        warrant=warrant_out(footage_request),
        area=area_out(footage_request),
        decided_at=footage_request.decided_at,
        decision_reason=footage_request.decision_reason,
        deadline=footage_request.deadline,
        closed_at=footage_request.closed_at,
        access_until=footage_request.access_until,
    )


def summary(footage_request: FootageRequest) -> schemas.RequestSummary:
    return schemas.RequestSummary(
        id=footage_request.id,
        state=footage_request.state,
        offence=footage_request.offence,
        window_start=footage_request.window_start,
        window_end=footage_request.window_end,
        created_at=footage_request.created_at,
    )


def warrant_out(footage_request: FootageRequest) -> schemas.Warrant:
    return schemas.Warrant(
        court=footage_request.warrant_court,
        docket_number=footage_request.warrant_docket_number,
        judge=footage_request.warrant_judge,
        issued_on=footage_request.warrant_issued_on,
        expires_on=footage_request.warrant_expires_on,
        document_sha256=footage_request.warrant_document_sha256,
    )


def area_out(footage_request: FootageRequest) -> schemas.Area:
    return schemas.Area(
        lat=footage_request.area_lat,
        lon=footage_request.area_lon,
        radius_m=footage_request.area_radius_m,
    )
