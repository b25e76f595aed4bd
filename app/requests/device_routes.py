"""JSON API for cameras (signed device calls): asks, decline, consent, streamed clip upload."""

from __future__ import annotations

from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from app.clipstore import BlobTooLarge, WriteBehind
from app.deps import NowDep, SessionDep, SettingsDep, make_router
from app.devices.routes import DeviceDep
from app.errors import InvalidInput, PayloadTooLarge
from app.requests import asks, schemas, uploads
from app.requests.routes import ClipStoreDep

router = make_router(prefix="/api/device", tags=["device requests"])


@router.get("/asks", response_model=list[schemas.DeviceAskOut])
def device_asks(device: DeviceDep, session: SessionDep, now: NowDep) -> list[schemas.DeviceAskOut]:
    """The device's open asks with the full request and the agency's age recipient."""
    return asks.device_asks(session, device, now)


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
