"""JSON API for cameras (signed device calls): asks, decline, consent, streamed clip upload."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from datetime import datetime
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers

from app.clipstore import BlobTooLarge, WriteBehind
from app.deps import NowDep, SessionDep, SettingsDep, make_router
from app.devices import service as devices
from app.devices.routes import DeviceDep
from app.errors import Conflict, InvalidInput, PayloadTooLarge
from app.requests import asks, schemas, uploads
from app.requests.routes import ClipStoreDep
from app.settings import Settings

router = make_router(prefix="/api/device", tags=["device requests"])


def _poll_transaction(
    factory: sessionmaker[Session],
    settings: Settings,
    clock: Callable[[], datetime],
    headers: Headers,
    path: str,
    body: bytes,
) -> bytes:
    """One poll, in one transaction: committed on success, rolled back on any error."""
    now = clock()
    with factory() as session:
        try:
            with session.begin():
                # A poll that delivers nothing new writes only nonce bookkeeping, so it may
                # commit without waiting for the disk (devices.make_durable says why); a first
                # delivery, which writes a log entry, makes the commit durable again.
                device = devices.check_call(
                    session, settings, headers, "GET", path, body, now, durable=False
                )
                return asks.device_asks(session, device.id, now)
        except IntegrityError:
            raise Conflict("a concurrent change conflicted with this one; try again") from None


class DirectRoute(APIRoute):
    """A route whose endpoint takes only the Request and returns a Response, called as is.

    For the device poll, the busiest call in the system (every camera, every few seconds):
    no dependency solving (each sync dependency would cost a worker-thread hop), no response
    validation, and the endpoint runs its one transaction itself, in one worker-thread hop,
    instead of TransactionRoute's separate hops for the work, the commit and the close.
    Errors are AppErrors, rendered by the app's handlers like any route's.
    """

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        return self.endpoint


async def device_asks(request: Request) -> Response:
    """The device's open asks with the full request and the agency's age recipient (signed)."""
    # On PostgreSQL the steady poll is answered before routing (app/requests/poll_fast.py);
    # this answers the rest: first deliveries, refusals, SQLite.
    state = request.app.state
    path = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    # The signature covers the body (empty on a GET, but a client may send one).
    body = await request.body()
    answer = await run_in_threadpool(
        _poll_transaction,
        state.sessionmaker,
        state.settings,
        state.clock,
        request.headers,
        path,
        body,
    )
    return Response(answer, media_type="application/json")


router.add_api_route(
    "/asks",
    device_asks,
    methods=["GET"],
    response_model=list[schemas.DeviceAskOut],
    route_class_override=DirectRoute,
)


@router.post("/asks/{ask_id}/decline", response_model=schemas.AskStateOut)
def device_decline(
    ask_id: str, device: DeviceDep, session: SessionDep, now: NowDep
) -> schemas.AskStateOut:
    """The resident said no on the device."""
    ask = asks.decline(
        session, asks.device_ask(session, device, ask_id), f"device:{device.id}", now
    )
    return schemas.AskStateOut(ask_id=ask.id, state=ask.state)


@router.post("/asks/{ask_id}/consent", response_model=schemas.AskStateOut)
def device_consent(
    ask_id: str, body: dict[str, Any], device: DeviceDep, session: SessionDep, now: NowDep
) -> schemas.AskStateOut:
    """A consent receipt signed by the device key, endorsing a fresh per-ask key."""
    ask = asks.consent(session, device, ask_id, body, now)
    return schemas.AskStateOut(ask_id=ask.id, state=ask.state)


@router.put(
    "/asks/{ask_id}/clips/{clip_id}",
    response_model=schemas.UploadOut,
    status_code=201,
    openapi_extra={"requestBody": {"content": {"application/octet-stream": {}}, "required": True}},
)
async def upload_clip(
    ask_id: str,
    clip_id: str,
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    store: ClipStoreDep,
    now: NowDep,
) -> JSONResponse:
    """Stream a rewrapped age file in; idempotent by clip id (same bytes again: 200)."""
    headers = dict(request.headers)
    plan = await run_in_threadpool(uploads.prepare, session, headers, ask_id, clip_id, now)
    # End the read transaction: no database lock is held while the bytes arrive.
    await run_in_threadpool(session.rollback)
    writer = await run_in_threadpool(store.writer, plan.blob_key, plan.manifest.ciphertext_size)
    # Hashing and writing run on the writer's thread while the loop receives the next bytes.
    pipeline = WriteBehind(writer)
    try:
        limit = plan.manifest.ciphertext_size
        received = 0
        prefix = bytearray()
        checked = False
        async for chunk in request.stream():
            if not chunk:
                continue
            received += len(chunk)
            if received > limit:
                raise BlobTooLarge
            await pipeline.write(chunk)
            if not checked:
                prefix += chunk
                if len(prefix) >= uploads.HEADER_PREFIX:
                    uploads.check_age_prefix(bytes(prefix))
                    checked, prefix = True, bytearray()
        if not checked:
            if not prefix:
                raise InvalidInput("body: the upload is empty")
            uploads.check_age_prefix(bytes(prefix))
        await pipeline.finish()
        status, answer = await run_in_threadpool(
            uploads.finish, session, settings, headers, request.url.path, plan, writer, now
        )
    except BlobTooLarge:
        raise PayloadTooLarge(
            f"body: more bytes than the manifest's {plan.manifest.ciphertext_size}"
        ) from None
    finally:
        await pipeline.close()
    return JSONResponse(answer.model_dump(), status_code=status)
