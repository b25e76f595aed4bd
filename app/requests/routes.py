"""JSON API for requesters, reviewers and residents (docs/requests-api.md)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated

from fastapi import BackgroundTasks, Depends, Request
from fastapi.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from app.accounts.models import User
from app.clipstore import ClipStore, ReadAhead
from app.deps import NowDep, RowId, SessionDep, make_router, require
from app.requests import asks, schemas, service, uploads
from app.requests.service import request_out, summary

router = make_router(prefix="/api", tags=["requests"])

Requester = Annotated[User, Depends(require("request:submit"))]
Reviewer = Annotated[User, Depends(require("request:review"))]
Resident = Annotated[User, Depends(require("ask:answer"))]
Reader = Annotated[User, Depends(require("request:read"))]


class ClipResponse(StreamingResponse):
    """A stored clip, read on its own thread ahead of the sending; the reader stops however
    the response ends (sent, client gone, server stopping)."""

    def __init__(self, reader: ReadAhead, headers: Mapping[str, str]) -> None:
        super().__init__(reader.chunks(), media_type="application/octet-stream", headers=headers)
        self.reader = reader

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.reader.close()


def clip_store(request: Request) -> ClipStore:
    return request.app.state.clip_store  # type: ignore[no-any-return]


ClipStoreDep = Annotated[ClipStore, Depends(clip_store)]


@router.post("/requests", response_model=schemas.RequestOut, status_code=201)
def submit_request(
    body: schemas.RequestIn, user: Requester, session: SessionDep, now: NowDep
) -> schemas.RequestOut:
    """File a warrant-backed request for one's agency."""
    return request_out(session, service.submit(session, user, body, now))


@router.get("/requests", response_model=list[schemas.RequestSummary])
def list_requests(user: Reader, session: SessionDep) -> list[schemas.RequestSummary]:
    """One's agency's requests (an auditor: all requests)."""
    return [summary(r) for r in service.agency_requests(session, user)]


@router.get("/requests/{request_id}", response_model=schemas.RequestOut)
def read_request(
    request_id: RowId, user: Reader, session: SessionDep, now: NowDep
) -> schemas.RequestOut:
    """A request with its warrant (a logged read)."""
    return request_out(session, service.read_request(session, user, request_id, now))


@router.post("/requests/{request_id}/close", response_model=schemas.RequestOut)
def close_request(
    request_id: RowId, user: Requester, session: SessionDep, now: NowDep
) -> schemas.RequestOut:
    """Stop collecting answers; shared clips stay for the access window."""
    return request_out(session, service.close(session, user, request_id, now))


@router.get("/requests/{request_id}/shared", response_model=list[schemas.SharedClipOut])
def list_shared(
    request_id: RowId, user: Requester, session: SessionDep
) -> list[schemas.SharedClipOut]:
    """What residents chose to share, under per-request pseudonyms."""
    return uploads.shared_clips(session, user, request_id)


@router.get(
    "/requests/{request_id}/shared/{shared_clip_id}",
    response_class=StreamingResponse,
    responses={200: {"content": {"application/octet-stream": {}}}},
)
def download_shared(
    request_id: RowId,
    shared_clip_id: str,
    user: Requester,
    session: SessionDep,
    store: ClipStoreDep,
    now: NowDep,
) -> ClipResponse:
    """The age file, streamed (a logged read); the first download ends revocability."""
    clip = uploads.open_download(session, user, request_id, shared_clip_id, now)
    # Opened now, before the transaction commits: a purge after this cannot cut it short.
    chunks = store.read(clip.blob_key)
    return ClipResponse(
        ReadAhead(chunks),
        headers={
            "Content-Length": str(clip.size),
            "Content-Disposition": f'attachment; filename="{clip.id}.age"',
        },
    )


@router.get("/reviews", response_model=list[schemas.RequestOut])
def list_reviews(user: Reviewer, session: SessionDep, now: NowDep) -> list[schemas.RequestOut]:
    """Requests awaiting review, with warrant details (a logged read)."""
    return [request_out(session, r) for r in service.awaiting_review(session, user, now)]


@router.post("/requests/{request_id}/review", response_model=schemas.RequestOut)
def review_request(
    request_id: RowId, body: schemas.ReviewIn, user: Reviewer, session: SessionDep, now: NowDep
) -> schemas.RequestOut:
    """Approve or reject with a reason; the final approval sends the asks."""
    return request_out(session, service.review(session, user, request_id, body, now))


@router.get("/asks", response_model=list[schemas.ResidentAskOut])
def list_own_asks(user: Resident, session: SessionDep, now: NowDep) -> list[schemas.ResidentAskOut]:
    """Asks for one's own devices, with the full request (a logged read)."""
    return asks.resident_asks(session, user, now)


@router.post("/asks/{ask_id}/decline", response_model=schemas.AskStateOut)
def decline_ask(
    ask_id: str, user: Resident, session: SessionDep, now: NowDep
) -> schemas.AskStateOut:
    """Say no to an ask for one's device."""
    ask = asks.decline(session, asks.resident_ask(session, user, ask_id), f"user:{user.id}", now)
    return schemas.AskStateOut(ask_id=ask.id, state=ask.state)


@router.post("/asks/{ask_id}/revoke", response_model=schemas.AskStateOut)
def revoke_consent(
    ask_id: str,
    user: Resident,
    session: SessionDep,
    store: ClipStoreDep,
    background: BackgroundTasks,
    now: NowDep,
) -> schemas.AskStateOut:
    """Withdraw a consent before the requester's first download; the blobs are deleted."""
    keys = asks.revoke(session, user, ask_id, now)
    # After the commit (background tasks run once the response is sent); the scheduler
    # deletes anything a crash leaves behind, and purged clips are never served anyway.
    for key in keys:
        background.add_task(store.delete, key)
    return schemas.AskStateOut(ask_id=ask_id, state="revoked")
