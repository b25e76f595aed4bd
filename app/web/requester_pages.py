"""Requester pages: file a request (errors per field), my agency's requests, shared clips.

Nothing here says who was asked, who declined or how many cameras exist: the pages show only
the services' requester-facing shapes (RequestOut, SharedClipOut).
"""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.responses import Response, StreamingResponse
from pydantic import ValidationError

from app.accounts.models import User
from app.clipstore import ClipStore
from app.deps import NowDep, PrincipalDep, RowId, SessionDep, require
from app.errors import AppError
from app.requests import schemas, uploads
from app.requests import service as requests
from app.web.render import attempt, page_router, render, see_other
from porchlight.manifest import ManifestError, verify_manifest

router = page_router(prefix="/requests", tags=["pages"])

Requester = Annotated[User, Depends(require("request:submit"))]

FIELDS = [
    "court",
    "docket_number",
    "judge",
    "issued_on",
    "expires_on",
    "document_sha256",
    "offence",
    "window_start",
    "window_end",
    "lat",
    "lon",
    "radius_m",
]
STATE_TEXT = {
    "submitted": "Waiting for a community reviewer",
    "approved": "Approved",
    "rejected": "Rejected by the reviewer",
    "open": "Open: residents in the area may choose to share",
    "closed": "Closed: shared clips stay downloadable until access ends",
    "expired": "Expired: shared clips were deleted",
}


def _when(raw: str) -> datetime | str:
    # <input type="datetime-local"> sends "YYYY-MM-DDTHH:MM"; the form says times are UTC.
    try:
        moment = datetime.fromisoformat(raw.strip())
    except ValueError:
        return "enter a date and time, like 2026-11-20T21:30"
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


def _parse(values: dict[str, str]) -> schemas.RequestIn | dict[str, str]:
    """The form as a RequestIn, or an error message per field."""
    errors: dict[str, str] = {}
    for name in FIELDS:
        if not values[name].strip():
            errors[name] = "this field is required"
    times = {
        name: _when(values[name]) for name in ("window_start", "window_end") if name not in errors
    }
    errors.update({n: t for n, t in times.items() if isinstance(t, str)})
    for name in ("issued_on", "expires_on"):
        if name not in errors:
            try:
                date.fromisoformat(values[name].strip())
            except ValueError:
                errors[name] = "enter a date, like 2026-11-20"
    if errors:
        return errors
    document: dict[str, Any] = {
        "warrant": {
            "court": values["court"].strip(),
            "docket_number": values["docket_number"].strip(),
            "judge": values["judge"].strip(),
            "issued_on": values["issued_on"].strip(),
            "expires_on": values["expires_on"].strip(),
            "document_sha256": values["document_sha256"].strip().lower(),
        },
        # A browser sends a textarea's line breaks as CR LF (HTML's form encoding); the API
        # takes LF only, and refuses any other control character (schemas.RequestIn).
        "offence": values["offence"].strip().replace("\r\n", "\n"),
        "window_start": times["window_start"],
        "window_end": times["window_end"],
        "area": {
            "lat": values["lat"].strip(),
            "lon": values["lon"].strip(),
            "radius_m": values["radius_m"].strip(),
        },
    }
    try:
        return schemas.RequestIn.model_validate(document)
    except ValidationError as error:
        for item in error.errors():
            field = str(item["loc"][-1]) if item["loc"] else ""
            if field == "document_sha256":
                message = "the SHA-256 must be 64 hexadecimal digits"
            else:
                message = str(item["msg"])
            errors.setdefault(field if field in FIELDS else "", message)
        return errors


def _service_error(message: str) -> dict[str, str]:
    # The service names the field first ("warrant.expires_on: ..."); put it beside that field.
    path, sep, rest = message.partition(": ")
    field = path.rsplit(".", 1)[-1]
    if sep and field in FIELDS:
        return {field: rest}
    return {"": message}


def _form(
    request: Request,
    principal: PrincipalDep,
    *,
    values: dict[str, str] | None = None,
    errors: dict[str, str] | None = None,
    status_code: int = 200,
) -> Response:
    return render(
        request,
        "requester/new.html",
        {"title": "File a request", "values": values or {}, "errors": errors or {}},
        principal=principal,
        status_code=status_code,
    )


@router.get("")
def my_requests(
    request: Request, user: Requester, principal: PrincipalDep, session: SessionDep
) -> Response:
    """My agency's requests and their states."""
    return render(
        request,
        "requester/list.html",
        {
            "title": "My requests",
            "requests": requests.agency_requests(session, user),
            "state_text": STATE_TEXT,
            "done": request.query_params.get("done") == "filed",
        },
        principal=principal,
    )


@router.get("/new")
def new_request(request: Request, _: Requester, principal: PrincipalDep) -> Response:
    """The request form."""
    return _form(request, principal)


async def _form_values(request: Request) -> dict[str, str]:
    # Read once here (async) so the endpoint itself runs in the threadpool like every other.
    form = await request.form()
    return {name: str(form.get(name, "")) for name in FIELDS}


@router.post("/new")
def file_request(
    request: Request,
    user: Requester,
    principal: PrincipalDep,
    session: SessionDep,
    now: NowDep,
    values: Annotated[dict[str, str], Depends(_form_values)],
) -> Response:
    """File a request: every field is checked, and each problem is shown beside its field."""
    parsed = _parse(values)
    if isinstance(parsed, schemas.RequestIn):
        body = parsed
        outcome = attempt(session, lambda: requests.submit(session, user, body, now))
        if not isinstance(outcome, AppError):
            return see_other(f"/requests/{outcome.id}?done=filed")
        errors = _service_error(outcome.message)
    else:
        errors = parsed
    return _form(request, principal, values=values, errors=errors, status_code=422)


def _verification(clip: schemas.SharedClipOut) -> tuple[bool, str]:
    """Check the clip's manifest signature with the per-case key, and its size."""
    document = dict(clip.manifest) | {"signature": clip.manifest_signature}
    try:
        manifest = verify_manifest(json.dumps(document).encode(), clip.signer_public_key)
    except ManifestError as error:
        return False, f"Manifest does not verify: {error}"
    if manifest.ciphertext_size != clip.size:
        return False, "The stored file's size differs from the signed manifest"
    return True, "Manifest signature verified (per-case key); size matches"


@router.get("/{request_id}")
def request_page(
    request: Request,
    request_id: RowId,
    user: Requester,
    principal: PrincipalDep,
    session: SessionDep,
    now: NowDep,
) -> Response:
    """One request (a logged read), its state, and the clips residents chose to share."""
    footage_request = requests.read_request(session, user, request_id, now)
    clips = uploads.shared_clips(session, user, request_id)
    return render(
        request,
        "requester/detail.html",
        {
            "title": f"Request #{request_id}",
            "r": requests.request_out(session, footage_request),
            "state_text": STATE_TEXT,
            "clips": [{"clip": c, "check": _verification(c)} for c in clips],
            "done": request.query_params.get("done", ""),
        },
        principal=principal,
    )


@router.post("/{request_id}/close")
def close_request(request_id: RowId, user: Requester, session: SessionDep, now: NowDep) -> Response:
    """Stop collecting answers; shared clips stay for the access window."""
    requests.close(session, user, request_id, now)
    return see_other(f"/requests/{request_id}?done=closed")


@router.get("/{request_id}/clips/{shared_clip_id}")
def download_clip(
    request: Request,
    request_id: RowId,
    shared_clip_id: str,
    user: Requester,
    session: SessionDep,
    now: NowDep,
) -> Response:
    """Download a shared clip's age file (a logged read; the first ends revocability)."""
    clip = uploads.open_download(session, user, request_id, shared_clip_id, now)
    store: ClipStore = request.app.state.clip_store
    return StreamingResponse(
        store.read(clip.blob_key),
        media_type="application/octet-stream",
        headers={
            "Content-Length": str(clip.size),
            "Content-Disposition": f'attachment; filename="{clip.id}.age"',
        },
    )
